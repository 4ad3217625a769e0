//! Building and removing a lab: network namespaces, veths, addresses, routes,
//! static neighbours, and the processes started in them.
//!
//! Everything a lab creates is first written to its state file
//! (`<state dir>/<prefix>.json`, default state dir `/run/talaria-lab`), then
//! created. [`Lab`] tears down on drop (also on panic) unless kept, and
//! `talaria-lab down` removes exactly what a state file lists, so a crashed
//! lab can always be cleaned. Processes are recorded with their start time
//! and are only signalled while that still matches (no PID reuse accidents).

use crate::cpu::process_start_time;
use crate::manifests::{self, ServiceSet};
use crate::switch::SwitchKind;
use crate::topology::{
    node_pod_dev, switch_port_dev, Names, Topology, GATEWAY_V6, NODE_UPLINK_DEV, POD_DEV,
    POD_GATEWAY,
};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use talaria_preflight::{commands, Need};

/// What every lab needs: root for namespaces, `ip`, and what switch-agent
/// and the node agents need to load and pin BPF (bpffs is mounted here,
/// before the lab creates its pin directory).
pub const LAB_NEEDS: [Need; 4] = [Need::Root, Need::Bpffs, Need::Tcx, commands::IP];

/// Default directory of state files.
pub const DEFAULT_STATE_DIR: &str = "/run/talaria-lab";

/// Services per manifest file (see [`Lab::write_services`]).
pub const SERVICES_PER_FILE: usize = 25;

/// The manifest file holding the `i`-th [`SERVICES_PER_FILE`] Services.
pub fn services_file(i: usize) -> String {
    format!("services-{i:04}.yaml")
}

/// The state directory (`TALARIA_LAB_STATE_DIR` overrides the default).
pub fn state_dir() -> PathBuf {
    std::env::var_os("TALARIA_LAB_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The `talaria-lab` binary run inside pods (`serve`, `load`):
/// `$TALARIA_LAB_EXE`, else the running executable.
pub fn lab_exe() -> Result<String> {
    match std::env::var_os("TALARIA_LAB_EXE") {
        Some(p) => Ok(p.to_string_lossy().into_owned()),
        None => Ok(std::env::current_exe()?.to_string_lossy().into_owned()),
    }
}

/// A process the lab started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcRecord {
    /// PID.
    pub pid: u32,
    /// Start time (jiffies since boot), to recognise PID reuse.
    pub start_time: u64,
    /// What it is.
    pub what: String,
}

/// Everything one lab instance created.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Unique prefix of every namespace name.
    pub prefix: String,
    /// Mode the lab was brought up in.
    pub mode: String,
    /// The switch it forwards through (`switch-agent`, `bmv2`).
    #[serde(default)]
    pub switch: String,
    /// Creator PID.
    pub owner_pid: u32,
    /// Network namespaces, recorded before creation.
    pub netns: Vec<String>,
    /// Processes started.
    pub procs: Vec<ProcRecord>,
    /// Directories created (manifests, logs).
    pub dirs: Vec<PathBuf>,
    /// bpffs pins created by lab components.
    pub pins: Vec<PathBuf>,
}

impl State {
    /// Path of a prefix's state file.
    pub fn path(prefix: &str) -> PathBuf {
        state_dir().join(format!("{prefix}.json"))
    }

    /// Writes the state file atomically.
    pub fn save(&self) -> Result<()> {
        let dir = state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let p = Self::path(&self.prefix);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }

    /// Loads a state file.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }

    /// All state files in the state directory.
    pub fn list() -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(state_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        v.sort();
        v
    }
}

fn proc_alive(r: &ProcRecord) -> bool {
    process_start_time(r.pid) == Some(r.start_time)
}

/// Removes everything a state lists: processes (TERM, then KILL after 3 s),
/// namespaces, pins, directories, then the state file. Idempotent; returns
/// what it could not remove.
pub fn teardown(state: &State) -> Vec<String> {
    let mut problems = Vec::new();
    for r in state.procs.iter().rev() {
        if proc_alive(r) {
            // SAFETY: kill(2) on a PID whose start time we just checked.
            unsafe { libc::kill(r.pid as i32, libc::SIGTERM) };
        }
    }
    let t0 = Instant::now();
    while state.procs.iter().any(proc_alive) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for r in state.procs.iter().filter(|r| proc_alive(r)) {
        // SAFETY: as above.
        unsafe { libc::kill(r.pid as i32, libc::SIGKILL) };
    }
    let t0 = Instant::now();
    while state.procs.iter().any(proc_alive) && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for r in state.procs.iter().filter(|r| proc_alive(r)) {
        problems.push(format!("process {} ({}) still running", r.pid, r.what));
    }
    for ns in state.netns.iter().rev() {
        if Path::new("/run/netns").join(ns).exists() {
            let out = Command::new("ip").args(["netns", "del", ns]).output();
            if !matches!(&out, Ok(o) if o.status.success()) {
                problems.push(format!("netns {ns}: delete failed"));
            }
        }
    }
    for p in &state.pins {
        if p.exists() {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir_all(p));
        }
    }
    for d in &state.dirs {
        if d.exists() {
            if let Err(e) = std::fs::remove_dir_all(d) {
                problems.push(format!("{}: {e}", d.display()));
            }
        }
    }
    if problems.is_empty() {
        let _ = std::fs::remove_file(State::path(&state.prefix));
    }
    problems
}

/// Runs a command, failing with its stderr.
pub fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut c = Command::new(cmd);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().with_context(|| format!("spawn {cmd}"))?;
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.iter().take(6).cloned().collect::<Vec<_>>().join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -n <ns> -batch -` with the given commands.
pub fn ip_batch(ns: &str, cmds: &str) -> Result<()> {
    run("ip", &["-n", ns, "-batch", "-"], Some(cmds)).map(|_| ())
}

/// Runs a command inside a netns.
pub fn in_ns(ns: &str, cmd: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(cmd);
    run("ip", &args, stdin)
}

/// A fresh unique prefix: `tl` + 4 hex digits, unused by any netns or state.
pub fn fresh_prefix() -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2654435761);
    for i in 0..4096u32 {
        let p = format!(
            "tl{:04x}",
            (seed.wrapping_add(i.wrapping_mul(40503))) & 0xffff
        );
        let used = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{p}-"))
            });
        if !used && !State::path(&p).exists() {
            return p;
        }
    }
    format!("tl{:x}", std::process::id())
}

/// How a recorded process was started, so that [`Lab::respawn`] can start
/// it again exactly so.
#[derive(Debug, Clone)]
struct Launch {
    /// The netns it runs in (`ip netns exec`), or `None` for a process
    /// started in the root namespace ([`Lab::spawn_host`]).
    ns: Option<String>,
    /// Its command line.
    argv: Vec<String>,
    /// Extra environment variables.
    env: Vec<(String, OsString)>,
}

impl Launch {
    fn command(&self) -> Command {
        let mut c = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(&self.argv);
                c
            }
            None => {
                let mut c = Command::new(&self.argv[0]);
                c.args(&self.argv[1..]);
                c
            }
        };
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }
}

/// A running lab. Dropping it tears everything down unless [`Lab::keep`] was
/// called.
pub struct Lab {
    /// The topology.
    pub topo: Topology,
    /// Namespace names.
    pub names: Names,
    /// Manifests, configs, logs, ready files.
    pub run_dir: PathBuf,
    /// What runs on the switch ports.
    pub switch: SwitchKind,
    /// Two controllers with leader election (on a fake Lease API server in
    /// the switch netns) instead of one; set before the controller starts.
    pub ha: bool,
    /// The controller's `source` (a Kubernetes API, `talaria-lab
    /// bench-new-service`) instead of the run dir's manifests; set before
    /// the controller starts.
    pub controller_source: Option<serde_json::Value>,
    /// The controller and the node agents share a timestamp-cookie key
    /// ([`crate::bringup::ts_cookie_key_file`]), so outside TCP clients'
    /// connections keep their backend; off, they follow the bucket hash
    /// only. Set before the controller starts.
    pub ts_cookies: bool,
    state: State,
    children: Vec<Child>,
    /// The last launch of each recorded process, by its description.
    launches: BTreeMap<String, Launch>,
    keep: bool,
}

impl Lab {
    /// Records and creates a lab's namespaces, links, addresses, routes and
    /// neighbours (Linux forwarding in the switch netns), and writes its
    /// manifests and configs into the run dir. `switch` is what
    /// [`crate::bringup::start_switch`] will run on the switch ports.
    pub fn create(topo: Topology, mode: &str, switch: SwitchKind) -> Result<Self> {
        let mut needs = LAB_NEEDS.to_vec();
        needs.extend(switch.needs());
        talaria_preflight::ensure(&needs)
            .with_context(|| format!("talaria-lab cannot build a lab on {}", switch.name()))?;
        topo.validate()?;
        let prefix = fresh_prefix();
        let names = Names {
            prefix: prefix.clone(),
        };
        let run_dir = state_dir().join(&prefix);
        let state = State {
            prefix,
            mode: mode.into(),
            switch: switch.name().into(),
            owner_pid: std::process::id(),
            dirs: vec![run_dir.clone()],
            ..Default::default()
        };
        state.save()?;
        let mut lab = Lab {
            topo,
            names,
            run_dir,
            switch,
            ha: false,
            controller_source: None,
            ts_cookies: true,
            state,
            children: Vec::new(),
            launches: BTreeMap::new(),
            keep: false,
        };
        std::fs::create_dir_all(lab.run_dir.join("ready"))?;
        std::fs::create_dir_all(lab.run_dir.join("logs"))?;
        lab.build()?;
        lab.write_configs(&ServiceSet::from_topology(&lab.topo))?;
        Ok(lab)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.names.prefix
    }

    /// The state (for reporting).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Keeps the lab up after this handle is dropped (`down` removes it).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    fn add_netns(&mut self, ns: &str) -> Result<()> {
        self.state.netns.push(ns.to_string());
        self.state.save()?;
        run("ip", &["netns", "add", ns], None)?;
        Ok(())
    }

    /// Records a bpffs pin (or pin directory) a component will create.
    pub fn record_pin(&mut self, p: PathBuf) -> Result<()> {
        self.state.pins.push(p);
        self.state.save()
    }

    fn sysctls(ns: &str, kv: &[&str]) -> Result<()> {
        let mut cmd = vec!["sysctl", "-qw"];
        cmd.extend_from_slice(kv);
        in_ns(ns, &cmd, None).map(|_| ())
    }

    fn build(&mut self) -> Result<()> {
        let t = self.topo.clone();
        let sw = self.names.switch();
        self.add_netns(&sw)?;
        for n in 0..t.nodes {
            let node = self.names.node(n);
            self.add_netns(&node)?;
            for p in 0..t.pods_per_node {
                let pod = self.names.pod(n, p);
                self.add_netns(&pod)?;
            }
        }
        for h in 0..t.external_hosts {
            let ext = self.names.external(h);
            self.add_netns(&ext)?;
        }
        // The switch netns never has IPv6: the switch forwards it itself.
        Self::sysctls(&sw, &[&FORWARDING[..], &NO_IPV6].concat())?;
        let node_ipv6: &[&str] = if t.ipv6() { &NODE_IPV6 } else { &NO_IPV6 };
        let node_sysctls = [&FORWARDING[..], node_ipv6].concat();
        let pod_ipv6: &[&str] = if t.ipv6() { &POD_IPV6 } else { &NO_IPV6 };
        let pod_sysctls = [&CLIENT[..], pod_ipv6].concat();
        // Switch side: one veth per node, created straight into both netns.
        let mut swb = String::from("link set lo up\n");
        swb.push_str(&format!("addr add {}/32 dev lo\n", t.switch_addr));
        for n in 0..t.nodes {
            let node = self.names.node(n);
            Self::sysctls(&node, &node_sysctls)?;
            swb.push_str(&format!(
                "link add {dev} address {mac} mtu {mtu} type veth peer name {up} address {pmac} mtu {mtu} netns {node}\n",
                dev = switch_port_dev(n),
                mac = Topology::switch_port_mac(n),
                mtu = t.uplink_mtu,
                up = NODE_UPLINK_DEV,
                pmac = Topology::node_uplink_mac(n),
            ));
        }
        // External hosts: a switch port each, the peer end their eth0.
        for h in 0..t.external_hosts {
            let port = t.external_port(h);
            swb.push_str(&format!(
                "link add {dev} address {mac} mtu {mtu} type veth peer name {POD_DEV} address {pmac} mtu {mtu} netns {ext}\n",
                dev = switch_port_dev(port),
                mac = Topology::switch_port_mac(port),
                mtu = t.uplink_mtu,
                pmac = Topology::node_uplink_mac(port),
                ext = self.names.external(h),
            ));
        }
        ip_batch(&sw, &swb)?;
        let mut swb = String::new();
        for n in 0..t.nodes {
            let (net, len) = t.pod_cidr(n);
            swb.push_str(&link_end(
                &switch_port_dev(n),
                t.switch_port_ip(n),
                t.node_ip(n),
                &Topology::node_uplink_mac(n),
                &format!("{net}/{len}"),
            ));
        }
        for h in 0..t.external_hosts {
            let port = t.external_port(h);
            swb.push_str(&link_end(
                &switch_port_dev(port),
                t.switch_port_ip(port),
                t.external_ip(h),
                &Topology::node_uplink_mac(port),
                &format!("{}/32", t.external_ip(h)),
            ));
        }
        ip_batch(&sw, &swb)?;
        // An external host routes everything through the switch and is
        // tuned as a pod client is (many short connections).
        for h in 0..t.external_hosts {
            let ext = self.names.external(h);
            let port = t.external_port(h);
            Self::sysctls(&ext, &[&CLIENT[..], &NO_IPV6].concat())?;
            let mut xb = String::from("link set lo up\n");
            xb.push_str(&link_end(
                POD_DEV,
                t.external_ip(h),
                t.switch_port_ip(port),
                &Topology::switch_port_mac(port),
                "default",
            ));
            ip_batch(&ext, &xb)?;
        }
        for n in 0..t.nodes {
            let node = self.names.node(n);
            let mut nb = String::from("link set lo up\n");
            nb.push_str(&link_end(
                NODE_UPLINK_DEV,
                t.node_ip(n),
                t.switch_port_ip(n),
                &Topology::switch_port_mac(n),
                "default",
            ));
            for p in 0..t.pods_per_node {
                nb.push_str(&format!(
                    "link add {dev} address {mac} mtu {mtu} type veth peer name {POD_DEV} address {pmac} mtu {mtu} netns {pod}\n",
                    dev = node_pod_dev(p),
                    mac = Topology::node_pod_veth_mac(n, p),
                    mtu = t.pod_mtu(),
                    pmac = Topology::pod_mac(n, p),
                    pod = self.names.pod(n, p),
                ));
            }
            ip_batch(&node, &nb)?;
            let mut nb = String::new();
            for p in 0..t.pods_per_node {
                let dev = node_pod_dev(p);
                nb.push_str(&format!("link set {dev} up\n"));
                nb.push_str(&format!(
                    "neigh replace {} lladdr {} dev {dev} nud permanent\n",
                    t.pod_ip(n, p),
                    Topology::pod_mac(n, p)
                ));
                nb.push_str(&format!("route replace {}/32 dev {dev}\n", t.pod_ip(n, p)));
                if t.ipv6() {
                    nb.push_str(&host_route_v6(
                        &dev,
                        t.pod_ip_v6(n, p),
                        &Topology::pod_mac(n, p),
                    ));
                }
            }
            if t.ipv6() {
                // Everything IPv6 but the node's own pods goes to the switch.
                nb.push_str(&gateway_v6(NODE_UPLINK_DEV, &Topology::switch_port_mac(n)));
            }
            ip_batch(&node, &nb)?;
            for p in 0..t.pods_per_node {
                let pod = self.names.pod(n, p);
                let gmac = Topology::node_pod_veth_mac(n, p);
                Self::sysctls(&pod, &pod_sysctls)?;
                let mut pb = format!(
                    "link set lo up\naddr add {ip}/32 dev {POD_DEV}\nlink set {POD_DEV} up\n\
                     neigh replace {POD_GATEWAY} lladdr {gmac} dev {POD_DEV} nud permanent\n\
                     route replace default via {POD_GATEWAY} dev {POD_DEV} onlink\n",
                    ip = t.pod_ip(n, p),
                );
                if t.ipv6() {
                    pb.push_str(&format!(
                        "addr add {}/128 dev {POD_DEV} nodad\n",
                        t.pod_ip_v6(n, p)
                    ));
                    pb.push_str(&gateway_v6(POD_DEV, &gmac));
                }
                ip_batch(&pod, &pb)?;
            }
        }
        Ok(())
    }

    /// Writes manifests (`services.yaml`, `nodes.yaml`), `switch.yaml` and
    /// `node-<i>.yaml` for the given Services into the run dir.
    pub fn write_configs(&self, set: &ServiceSet) -> Result<()> {
        let d = &self.run_dir;
        self.write_services(set, None)?;
        write_atomic(
            &d.join("manifests/nodes.yaml"),
            &manifests::nodes_yaml(&self.topo),
        )?;
        write_atomic(
            &d.join("switch.yaml"),
            &serde_yaml::to_string(&manifests::switch_config(&self.topo, &self.names))?,
        )?;
        for n in 0..self.topo.nodes {
            write_atomic(
                &d.join(format!("node-{n}.yaml")),
                &serde_yaml::to_string(&manifests::node_config(&self.topo, &self.names, n))?,
            )?;
        }
        Ok(())
    }

    /// Writes the Services of `set` as manifest files of
    /// [`SERVICES_PER_FILE`] each (`manifests/services-NNNN.yaml`): all of
    /// them, or only the files numbered in `only`, so that a change to a
    /// few of 10,000 Services rewrites (and the controller re-reads) a few
    /// files. Files beyond the set's last are removed on a full write.
    pub fn write_services(&self, set: &ServiceSet, only: Option<&BTreeSet<usize>>) -> Result<()> {
        let dir = self.run_dir.join("manifests");
        std::fs::create_dir_all(&dir)?;
        let files = set.services.chunks(SERVICES_PER_FILE).enumerate();
        for (i, chunk) in files {
            if only.is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            write_atomic(
                &dir.join(services_file(i)),
                &manifests::services_yaml(&self.topo, chunk),
            )?;
        }
        if only.is_none() {
            let used = set.services.len().div_ceil(SERVICES_PER_FILE);
            for e in std::fs::read_dir(&dir)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let index = name
                    .strip_prefix("services-")
                    .and_then(|n| n.strip_suffix(".yaml"))
                    .and_then(|n| n.parse::<usize>().ok());
                if index.is_some_and(|i| i >= used) {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
        Ok(())
    }

    /// Turns checksum and segmentation offloads off on every veth of the
    /// lab, for a switch that reads and writes raw frames through libpcap
    /// (bmv2): a frame it forwards must carry finished checksums and be no
    /// larger than the MTU, since nothing after it completes either.
    pub fn disable_offloads(&self) -> Result<()> {
        for ns in &self.state.netns {
            let links = in_ns(ns, &["ip", "-o", "link", "show", "type", "veth"], None)?;
            for dev in links.lines().filter_map(veth_name) {
                in_ns(
                    ns,
                    &[
                        "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off",
                        "gro", "off",
                    ],
                    None,
                )
                .with_context(|| format!("offloads off on {ns}/{dev}"))?;
            }
        }
        Ok(())
    }

    /// Keeps the switch netns' own IP stack off the switch ports, for a
    /// switch that reads its ports through packet sockets (bmv2): those see
    /// every frame before tc ingress, where this drops it, so the stack
    /// neither answers (ARP for the port addresses, port unreachable for
    /// Geneve to the switch address) nor forwards beside the switch. The
    /// filter is classic BPF `ret #TC_ACT_SHOT`: the kernel has `cls_bpf`
    /// but no `matchall` or `gact`.
    pub fn silence_switch_stack(&self) -> Result<()> {
        let sw = self.names.switch();
        for n in 0..self.topo.nodes + self.topo.external_hosts {
            let dev = switch_port_dev(n);
            in_ns(
                &sw,
                &["tc", "qdisc", "replace", "dev", &dev, "clsact"],
                None,
            )?;
            in_ns(
                &sw,
                &[
                    "tc",
                    "filter",
                    "replace",
                    "dev",
                    &dev,
                    "ingress",
                    "bpf",
                    "bytecode",
                    "1,6 0 0 2",
                    "da",
                ],
                None,
            )
            .with_context(|| format!("silencing the switch stack on {dev}"))?;
        }
        Ok(())
    }

    /// Starts a process inside a netns (`ip netns exec` execs in place, so
    /// the PID is the process itself), logging to `logs/<what>.log`, and
    /// records it before returning.
    pub fn spawn(&mut self, ns: &str, what: &str, argv: &[String]) -> Result<u32> {
        self.spawn_with_env(ns, what, argv, &[])
    }

    /// [`Lab::spawn`] with extra environment variables (a relocatable
    /// toolchain's `PATH` and `LD_LIBRARY_PATH`).
    pub fn spawn_with_env(
        &mut self,
        ns: &str,
        what: &str,
        argv: &[String],
        env: &[(&str, OsString)],
    ) -> Result<u32> {
        let l = Launch {
            ns: Some(ns.into()),
            argv: argv.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        self.launch(what, l, false)
    }

    /// Starts a process in the network namespace `ns` alone (`nsenter
    /// --net`, which execs in place), recorded like [`Lab::spawn`]. Unlike
    /// `ip netns exec` it keeps the host's mounts: `ip netns exec` gives
    /// the process a mount namespace of its own, with a bpffs of its own
    /// whose pins vanish with the process, so a program whose pinned maps
    /// and links must outlive it (switch-agent) is started this way.
    pub fn spawn_net(&mut self, ns: &str, what: &str, argv: &[String]) -> Result<u32> {
        let mut v = vec!["nsenter".to_string(), format!("--net=/run/netns/{ns}")];
        v.extend_from_slice(argv);
        self.spawn_host(what, &v)
    }

    /// Starts a process in the root namespace (for programs that enter a
    /// netns themselves, like `talaria-node --netns`), recorded like
    /// [`Lab::spawn`].
    pub fn spawn_host(&mut self, what: &str, argv: &[String]) -> Result<u32> {
        let l = Launch {
            ns: None,
            argv: argv.to_vec(),
            env: Vec::new(),
        };
        self.launch(what, l, false)
    }

    /// Starts `l` as `what`; `append` keeps the log of an earlier run.
    fn launch(&mut self, what: &str, l: Launch, append: bool) -> Result<u32> {
        let path = self.run_dir.join("logs").join(format!("{what}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)?;
        let mut c = l.command();
        c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = c.spawn().with_context(|| format!("start {what}"))?;
        let pid = child.id();
        // Wait until the exec has happened so the start time is the final one.
        let start_time = process_start_time(pid).unwrap_or(0);
        self.state.procs.push(ProcRecord {
            pid,
            start_time,
            what: what.into(),
        });
        self.state.save()?;
        self.children.push(child);
        self.launches.insert(what.into(), l);
        Ok(pid)
    }

    /// Kills the running process recorded as exactly `what` with SIGKILL
    /// (a crash: no signal handler, no clean-up), reaps it and forgets its
    /// record; [`Lab::respawn`] starts it again. Returns its PID.
    pub fn kill9(&mut self, what: &str) -> Result<u32> {
        let Some(rec) = self.state.procs.iter().find(|p| p.what == what).cloned() else {
            bail!("no process {what} recorded in lab {}", self.prefix());
        };
        if !proc_alive(&rec) {
            bail!("{what} (pid {}) is not running", rec.pid);
        }
        // SAFETY: kill(2) on a PID whose start time we just checked; it is
        // our own child, not reaped yet, so the PID cannot have been reused.
        if unsafe { libc::kill(rec.pid as i32, libc::SIGKILL) } != 0 {
            bail!(
                "kill -9 {what} (pid {}): {}",
                rec.pid,
                std::io::Error::last_os_error()
            );
        }
        if let Some(i) = self.children.iter().position(|c| c.id() == rec.pid) {
            let mut c = self.children.remove(i);
            c.wait().with_context(|| format!("reaping {what}"))?;
        }
        self.state.procs.retain(|p| p.pid != rec.pid);
        self.state.save()?;
        Ok(rec.pid)
    }

    /// Starts `what` again with the command line, namespace and environment
    /// of its last start, appending to its log. Returns the new PID.
    pub fn respawn(&mut self, what: &str) -> Result<u32> {
        let Some(l) = self.launches.get(what).cloned() else {
            bail!("{what} was never started in lab {}", self.prefix());
        };
        if self
            .state
            .procs
            .iter()
            .any(|p| p.what == what && proc_alive(p))
        {
            bail!("{what} is still running");
        }
        let path = self.run_dir.join("logs").join(format!("{what}.log"));
        let mut log = std::fs::OpenOptions::new().append(true).open(&path)?;
        writeln!(log, "=== talaria-lab: {what} started again ===")?;
        self.launch(what, l, true)
    }

    /// PIDs of recorded processes whose description starts with `what`.
    pub fn pids(&self, what: &str) -> Vec<u32> {
        self.state
            .procs
            .iter()
            .filter(|p| p.what.starts_with(what))
            .map(|p| p.pid)
            .collect()
    }

    /// Whether a started process has exited (and its status).
    pub fn exited(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops one recorded process (TERM, then KILL after 3 s).
    pub fn stop(&mut self, pid: u32) {
        let recs: Vec<ProcRecord> = self
            .state
            .procs
            .iter()
            .filter(|p| p.pid == pid)
            .cloned()
            .collect();
        let _ = teardown(&State {
            prefix: String::new(),
            procs: recs,
            ..Default::default()
        });
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = c.wait();
        }
        self.state.procs.retain(|p| p.pid != pid);
        let _ = self.state.save();
    }

    /// Starts the HTTP + UDP echo server in every pod and waits until all
    /// are listening (at most 15 s).
    pub fn start_servers(&mut self) -> Result<()> {
        let exe = lab_exe()?;
        let t = self.topo.clone();
        let mut ready = Vec::new();
        for (n, p) in t.pods() {
            let name = Topology::pod_name(n, p);
            let rf = self.run_dir.join("ready").join(&name);
            let _ = std::fs::remove_file(&rf);
            let argv = vec![
                exe.clone(),
                "serve".into(),
                "--name".into(),
                name.clone(),
                "--http-port".into(),
                t.http_port.to_string(),
                "--udp-port".into(),
                t.udp_port.to_string(),
                "--ready-file".into(),
                rf.to_string_lossy().into_owned(),
            ];
            let mut argv = argv;
            if t.ipv6() {
                argv.push("--ipv6".into());
            }
            let pid = self.spawn(&self.names.pod(n, p), &format!("serve-{name}"), &argv)?;
            ready.push((rf, pid, name));
        }
        let t0 = Instant::now();
        for (rf, pid, name) in ready {
            while !rf.exists() {
                if let Some(st) = self.exited(pid) {
                    bail!(
                        "server {name} exited: {st} (see {}/logs)",
                        self.run_dir.display()
                    );
                }
                if t0.elapsed() > Duration::from_secs(15) {
                    bail!("server {name} not ready after 15 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Tears the lab down now.
    pub fn down(mut self) -> Vec<String> {
        self.keep = true; // Drop must not run teardown a second time.
        let problems = teardown(&self.state);
        for c in &mut self.children {
            let _ = c.try_wait();
        }
        problems
    }
}

/// The switch's and the nodes': they forward, with no reverse-path filter.
const FORWARDING: [&str; 3] = [
    "net.ipv4.ip_forward=1",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
];

/// A pod's or an external host's: ports for many short connections.
const CLIENT: [&str; 2] = [
    "net.ipv4.tcp_tw_reuse=1",
    "net.ipv4.ip_local_port_range=1024 65000",
];

/// No IPv6: the switch's, the external hosts', and everything's in a lab
/// whose Services are IPv4 only.
const NO_IPV6: [&str; 2] = [
    "net.ipv6.conf.all.disable_ipv6=1",
    "net.ipv6.conf.default.disable_ipv6=1",
];

/// A dual-stack lab's node: it forwards IPv6 as it forwards IPv4.
const NODE_IPV6: [&str; 2] = [
    "net.ipv6.conf.all.forwarding=1",
    "net.ipv6.conf.default.accept_dad=0",
];

/// A dual-stack lab's pod: IPv6 on, but no router solicitations (its
/// route is static) and no DAD (its address is its own by construction).
const POD_IPV6: [&str; 4] = [
    "net.ipv6.conf.all.router_solicitations=0",
    "net.ipv6.conf.default.router_solicitations=0",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
];

/// `ip -batch` lines for an IPv6 default route through [`GATEWAY_V6`] on
/// `dev`, resolved by a static neighbour to `gateway_mac`: nothing on the
/// lab's links answers NDP for it.
fn gateway_v6(dev: &str, gateway_mac: &str) -> String {
    format!(
        "neigh replace {GATEWAY_V6} lladdr {gateway_mac} dev {dev} nud permanent\n\
         route replace ::/0 via {GATEWAY_V6} dev {dev}\n"
    )
}

/// `ip -batch` lines for a node's route to its pod's IPv6 address over
/// the pod's veth, with the pod's MAC as a static neighbour.
fn host_route_v6(dev: &str, ip: Ipv6Addr, mac: &str) -> String {
    format!(
        "neigh replace {ip} lladdr {mac} dev {dev} nud permanent\n\
         route replace {ip}/128 dev {dev}\n"
    )
}

/// `ip -batch` lines for one end of a switch–node link: its /24 address,
/// up, a static neighbour for the far end (nothing on the path answers
/// ARP), and `route` via the far end.
fn link_end(dev: &str, addr: Ipv4Addr, peer: Ipv4Addr, peer_mac: &str, route: &str) -> String {
    format!(
        "addr add {addr}/24 dev {dev}\nlink set {dev} up\n\
         neigh replace {peer} lladdr {peer_mac} dev {dev} nud permanent\n\
         route replace {route} via {peer} dev {dev}\n"
    )
}

/// The device name of an `ip -o link show` line (`3: p0@if2: <...>`).
fn veth_name(line: &str) -> Option<&str> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next().unwrap_or(name))
}

/// Replaces `path` with `text` in one rename: the controller polls the
/// manifests directory, and must never read a half-written file (an empty
/// one would read as "every Service deleted").
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep {
            let problems = teardown(&self.state);
            for c in &mut self.children {
                let _ = c.try_wait();
            }
            for p in problems {
                eprintln!("talaria-lab: teardown: {p}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_from_ip_link() {
        assert_eq!(
            veth_name("3: p0@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500"),
            Some("p0")
        );
        assert_eq!(veth_name("7: up0: <BROADCAST> mtu 1500"), Some("up0"));
        assert_eq!(veth_name("garbage"), None);
    }
}
