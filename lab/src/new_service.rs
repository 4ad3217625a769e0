//! `talaria-lab bench-new-service`: how long a new Service takes, end to
//! end, from its creation in the Kubernetes API to the first SYN to its
//! ClusterIP served at a remote node.
//!
//! The lab runs as usual (switch-agent or bmv2, one controller, a node
//! agent per node, the pod servers), except that the controller reads a
//! Kubernetes API (its `kubernetes` source) and the node agents run in
//! Kubernetes mode: their Pods from that API, their Services by long poll
//! of the controller's `GET /v1/services?after=<version>`. The API is the
//! shared fake (`talaria-fake-apiserver`), served by this process on
//! 127.0.0.1 in the switch netns (for the controller) and in every node
//! netns (for the agents); the agents reach the controller's REST API,
//! which listens in the switch netns, through a TCP relay from 127.0.0.1 in
//! their netns ([`Relays`]).
//!
//! For each Service, one after another: a Service and its EndpointSlice,
//! whose one endpoint is a pod on a backend node, are put into the fake
//! API (which hands their watch events to the open watches); that is the
//! creation time. A thread in a client pod on node 0 (a remote node: no
//! endpoint is on it) then starts a fresh TCP connection to the ClusterIP
//! every `interval_ms`, each with one SYN and `attempt_ms` to complete
//! (earlier ones go on waiting), until one completes or `give_up_ms` has
//! passed. The latency is the first completion less the creation time;
//! since a SYN leaves every `interval_ms`, the first SYN that could have
//! been served left at most that much before the one that was. The HTTP
//! answer on that connection must name the endpoint's pod, else the
//! Service counts as failed. One warm-up Service is measured first and not
//! counted.

use crate::bringup::{self, node_agent_config, spawn_node_agent, CONTROLLER_REST};
use crate::components::talaria_missing;
use crate::manifests::{endpoint_slice_object, node_object, service_object, ServiceSpec};
use crate::netns::Lab;
use crate::stats::percentile;
use crate::switch::SwitchKind;
use crate::topology::{IpFamily, Topology};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use talaria_fake_apiserver::{Resource, Server, Shared};

/// `talaria-lab bench-new-service` options.
#[derive(clap::Args, Debug, Clone)]
pub struct NewServiceArgs {
    /// Services to create and measure, one after another.
    #[arg(long, default_value_t = 200)]
    pub services: u32,
    /// 20 Services instead of `--services`.
    #[arg(long)]
    pub quick: bool,
    /// Milliseconds between two connection attempts (each a fresh
    /// connection with one SYN; earlier ones go on waiting).
    #[arg(long, default_value_t = 2)]
    pub interval_ms: u64,
    /// Milliseconds one connection attempt may take to complete (under the
    /// kernel's 1 s SYN retransmission, so one SYN each).
    #[arg(long, default_value_t = 200)]
    pub attempt_ms: u64,
    /// Milliseconds after its creation a Service is given up as failed.
    #[arg(long, default_value_t = 5000)]
    pub give_up_ms: u64,
    /// Milliseconds between one Service served and the next one created.
    #[arg(long, default_value_t = 100)]
    pub gap_ms: u64,
    /// Services (with one endpoint each) already in the API, and so
    /// planned, before the first one measured: how the latency grows with
    /// the cluster.
    #[arg(long, default_value_t = 0)]
    pub existing: u32,
    /// Topology YAML (default: the embedded one; its own Services are not
    /// created).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Output directory (summary.md, latencies.csv).
    #[arg(long, default_value = "bench/results/new-service")]
    pub out: PathBuf,
}

impl Default for NewServiceArgs {
    fn default() -> Self {
        Self {
            services: 200,
            quick: false,
            interval_ms: 2,
            attempt_ms: 200,
            give_up_ms: 5000,
            gap_ms: 100,
            existing: 0,
            topology: None,
            out: "bench/results/new-service".into(),
        }
    }
}

impl NewServiceArgs {
    /// How many Services are measured.
    pub fn count(&self) -> u32 {
        if self.quick {
            20
        } else {
            self.services
        }
    }
}

/// One Service measured.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Service name.
    pub name: String,
    /// Its ClusterIP.
    pub vip: std::net::Ipv4Addr,
    /// The pod that serves it.
    pub endpoint: String,
    /// From creation to the first connection that completed; `None`: none
    /// did within `give_up_ms`.
    pub latency: Option<Duration>,
    /// From creation to when the SYN of that connection was sent.
    pub sent: Option<Duration>,
    /// Connection attempts made.
    pub attempts: u32,
    /// The backend that answered on that connection (`None`: no answer).
    pub backend: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl Sample {
    /// Served by its endpoint within the time allowed.
    pub fn ok(&self) -> bool {
        self.latency.is_some() && self.error.is_none()
    }
}

/// A run's results.
#[derive(Debug, Clone)]
pub struct Report {
    /// The lab's prefix (gone once the report exists).
    pub prefix: String,
    /// The lab's topology.
    pub topology: Topology,
    /// The warm-up Service (not counted).
    pub warm_up: Sample,
    /// The Services measured, in order.
    pub samples: Vec<Sample>,
    /// Wall time of the whole run, lab included, in seconds.
    pub took_s: f64,
    /// The controller's own times over the measured Services, from its
    /// metrics (`None`: they could not be read).
    pub controller: Option<ControllerTimes>,
}

/// The controller's plans and switch writes over a run: the difference of
/// its `talaria_plan_seconds` and `talaria_sync_latency_seconds`
/// histograms between the start and the end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ControllerTimes {
    /// Plans made.
    pub plans: f64,
    /// Mean seconds to build the model and plan.
    pub plan_mean_s: f64,
    /// Switch syncs.
    pub syncs: f64,
    /// Mean seconds from a desired-state change to the switch holding it.
    pub sync_mean_s: f64,
}

/// (sum, count) of each histogram named in `text` (Prometheus text
/// format), by name without `_sum`/`_count` and labels, summed over
/// labels.
fn histograms(text: &str) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut out: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name);
        if let Some(n) = name.strip_suffix("_sum") {
            out.entry(n.to_string()).or_default().0 += v;
        } else if let Some(n) = name.strip_suffix("_count") {
            out.entry(n.to_string()).or_default().1 += v;
        }
    }
    out
}

impl ControllerTimes {
    /// What happened between two readings of the controller's metrics.
    fn between(before: &str, after: &str) -> Self {
        let (b, a) = (histograms(before), histograms(after));
        let delta = |n: &str| {
            let (s0, c0) = b.get(n).copied().unwrap_or_default();
            let (s1, c1) = a.get(n).copied().unwrap_or_default();
            (s1 - s0, c1 - c0)
        };
        let (plan_s, plans) = delta("talaria_plan_seconds");
        let (sync_s, syncs) = delta("talaria_sync_latency_seconds");
        let mean = |s: f64, c: f64| if c > 0.0 { s / c } else { 0.0 };
        Self {
            plans,
            plan_mean_s: mean(plan_s, plans),
            syncs,
            sync_mean_s: mean(sync_s, syncs),
        }
    }
}

/// The controller's `/metrics`, fetched from inside `switch_ns`.
fn controller_metrics(switch_ns: &str) -> Result<String> {
    let addr: SocketAddr = CONTROLLER_REST.parse()?;
    in_netns(switch_ns, move || {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.write_all(b"GET /metrics HTTP/1.0\r\nHost: talaria-lab\r\n\r\n")?;
        let mut body = String::new();
        // HTTP/1.0: the answer ends with the connection; at most 4 MiB.
        sock.take(4 << 20).read_to_string(&mut body)?;
        anyhow::ensure!(
            body.starts_with("HTTP/1.") && body.contains(" 200 "),
            "{body:.80}"
        );
        Ok(body)
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("metrics thread panicked"))?
}

impl Report {
    /// Services not served (by their endpoint, in time).
    pub fn failures(&self) -> usize {
        self.samples.iter().filter(|s| !s.ok()).count()
    }

    /// Latencies of the Services served, in microseconds, sorted.
    pub fn latencies_us(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .samples
            .iter()
            .filter(|s| s.ok())
            .filter_map(|s| s.latency)
            .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
            .collect();
        v.sort_unstable();
        v
    }
}

/// Runs `f` on a thread of its own in network namespace `ns` (the other
/// threads stay where they are) and returns what it returns.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T>>> {
    let path = format!("/run/netns/{ns}");
    let h = std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            enter_netns(&path)?;
            f()
        })?;
    Ok(h)
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_netns(path: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).with_context(|| format!("open {path}"))?;
    // SAFETY: setns(2) on a file descriptor we hold open; for
    // CLONE_NEWNET it moves the calling thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Binds a TCP listener on `addr` in network namespace `ns`.
fn bind_in(ns: &str, addr: &str) -> Result<TcpListener> {
    let addr = addr.to_string();
    in_netns(ns, move || Ok(TcpListener::bind(&addr)?))?
        .join()
        .map_err(|_| anyhow::anyhow!("binding thread panicked"))?
}

/// TCP relays from a listener in one netns to an address in another; the
/// relays stop accepting when dropped (connections in progress end when
/// either side closes them).
pub struct Relays {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<()>>>,
}

impl Relays {
    fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// Relays connections to `listen` (in netns `from`) to `target` (in
    /// netns `to`).
    fn add(&mut self, from: &str, listen: &str, to: &str, target: SocketAddr) -> Result<()> {
        let l = bind_in(from, listen)?;
        l.set_nonblocking(true)?;
        let stop = self.stop.clone();
        let to = format!("/run/netns/{to}");
        // The accepting thread lives in the target netns: the sockets it
        // connects are made there; the listener stays in `from`.
        let h = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || -> Result<()> {
                enter_netns(&to)?;
                while !stop.load(Ordering::Relaxed) {
                    if !readable(&l, Duration::from_millis(100))? {
                        continue;
                    }
                    match l.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false)?;
                            match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                                Ok(server) => pipe(client, server)?,
                                // The client sees the connection close, as
                                // if refused.
                                Err(e) => eprintln!("relay to {target}: {e}"),
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            })?;
        self.threads.push(h);
        Ok(())
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// Whether `l` has a connection to accept, waiting at most `wait`.
fn readable(l: &TcpListener, wait: Duration) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll(2) on one pollfd that lives across the call.
    match unsafe { libc::poll(&mut fd, 1, ms) } {
        -1 => match std::io::Error::last_os_error() {
            e if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
            e => Err(e.into()),
        },
        n => Ok(n > 0),
    }
}

/// Copies both ways between `a` and `b` on two threads, each ending (and
/// shutting the other side's write half) at end of stream or an error.
/// Both get `TCP_NODELAY`: a relay must not hold a short write back for an
/// ACK.
fn pipe(a: TcpStream, b: TcpStream) -> Result<()> {
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    for (mut from, to) in [(a.try_clone()?, b.try_clone()?), (b, a)] {
        std::thread::Builder::new()
            .name("relay-copy".into())
            .spawn(move || {
                let mut to_w = &to;
                let _ = std::io::copy(&mut from, &mut to_w);
                let _ = to.shutdown(std::net::Shutdown::Write);
            })?;
    }
    Ok(())
}

/// A Pod object for lab pod (node, pod).
fn pod_object(t: &Topology, n: u32, p: u32) -> Value {
    let ip = t.pod_ip(n, p).to_string();
    let name = Topology::pod_name(n, p);
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": t.namespace, "uid": format!("uid-{name}")},
        "spec": {"nodeName": Topology::node_name(n), "containers": [{"name": "serve", "image": "talaria-lab"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// Service `index` (`new-<index>`), its one endpoint `endpoint`.
fn spec(t: &Topology, index: u32, endpoint: (u32, u32)) -> ServiceSpec {
    ServiceSpec {
        index,
        name: format!("new-{index:05}"),
        cluster_ips: vec![t.cluster_ip(index).into()],
        endpoints: vec![endpoint],
        not_ready: Vec::new(),
        external: None,
    }
}

/// The fake API's objects before the run: the lab's Nodes, its Pods, the
/// `kubernetes` ServiceCIDR (the lab's Service CIDR) and `existing`
/// Services (indices from 0, endpoints on the backend pods in turn).
fn seed(api: &Shared, t: &Topology, existing: u32) {
    let mut a = api.lock().expect("fake API state");
    let backends = t.backend_pods();
    for k in 0..existing {
        let s = spec(t, k, backends[k as usize % backends.len()]);
        a.put(Resource::Services, service_object(t, &s));
        a.put(
            Resource::EndpointSlices,
            endpoint_slice_object(t, &s, IpFamily::IPv4),
        );
    }
    for n in 0..t.nodes {
        a.put(Resource::Nodes, node_object(t, n));
    }
    for (n, p) in t.pods() {
        a.put(Resource::Pods, pod_object(t, n, p));
    }
    a.put(
        Resource::ServiceCidrs,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
            "metadata": {"name": "kubernetes"}, "spec": {"cidrs": [t.service_cidr]}}),
    );
}

/// Node `n`'s agent configuration in Kubernetes mode: the lab's (uplink,
/// addresses, pins, metrics) without its pods and Services, which come
/// from the API at `api_server` and the controller at `controller_url`.
fn node_agent_config_k8s(lab: &Lab, n: u32, api_server: &str, controller_url: &str) -> String {
    let base = node_agent_config(lab, n, &[], false);
    let mut v: Value = serde_yaml::from_str(&base).expect("our own YAML");
    let obj = v.as_object_mut().expect("a mapping");
    obj.remove("pods");
    obj.remove("services");
    let (net, len) = lab.topo.pod_cidr(n);
    v["mode"] = json!("kubernetes");
    v["pod_cidrs"] = json!([format!("{net}/{len}")]);
    v["kubernetes"] = json!({
        "node_name": Topology::node_name(n),
        "api_server": api_server,
        "controller_url": controller_url,
    });
    serde_yaml::to_string(&v).expect("JSON values serialize as YAML")
}

/// What [`probe`] saw.
struct Probe {
    /// When the first connection completed.
    completed: Option<Instant>,
    /// When that connection's SYN was sent.
    sent: Option<Instant>,
    attempts: u32,
    backend: Option<String>,
    error: Option<String>,
}

/// Fresh TCP connections to `to`, one started every `interval` (each with
/// its own SYN; earlier ones go on waiting), each given `attempt` to
/// complete, until one completes or `deadline`. On the connection that
/// completed first, one HTTP request: the answer names the backend. Runs
/// on the calling thread (a current-thread runtime), so its sockets are
/// made in the calling thread's network namespace.
fn probe(to: SocketAddr, interval: Duration, attempt: Duration, deadline: Instant) -> Probe {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Probe {
                completed: None,
                sent: None,
                attempts: 0,
                backend: None,
                error: Some(format!("runtime: {e}")),
            }
        }
    };
    let (first, attempts, last_error) = rt.block_on(connect_first(to, interval, attempt, deadline));
    let Some((sent, completed, sock)) = first else {
        return Probe {
            completed: None,
            sent: None,
            attempts,
            backend: None,
            error: Some(format!(
                "no connection completed; last error: {}",
                last_error.unwrap_or_default()
            )),
        };
    };
    let (backend, error) = match sock
        .into_std()
        .map_err(anyhow::Error::from)
        .and_then(backend_of)
    {
        Ok(b) => (Some(b), None),
        Err(e) => (None, Some(format!("HTTP on the connection: {e:#}"))),
    };
    Probe {
        completed: Some(completed),
        sent: Some(sent),
        attempts,
        backend,
        error,
    }
}

/// The first connection of [`probe`] to complete: (its SYN sent, completed,
/// the socket); the attempts started; the last error seen.
type FirstConnection = (
    Option<(Instant, Instant, tokio::net::TcpStream)>,
    u32,
    Option<String>,
);

async fn connect_first(
    to: SocketAddr,
    interval: Duration,
    attempt: Duration,
    deadline: Instant,
) -> FirstConnection {
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let budget = deadline.saturating_duration_since(Instant::now());
    let max = u32::try_from(budget.as_nanos() / interval.as_nanos().max(1) + 1).unwrap_or(u32::MAX);
    let (mut attempts, mut last_error) = (0u32, None);
    let until = tokio::time::Instant::from_std(deadline);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = tick.tick(), if attempts < max => {
                attempts += 1;
                tasks.spawn(async move {
                    let sent = Instant::now();
                    let r = tokio::time::timeout(attempt, tokio::net::TcpStream::connect(to)).await;
                    (sent, r)
                });
            }
            Some(done) = tasks.join_next() => match done {
                Ok((sent, Ok(Ok(sock)))) => {
                    let completed = Instant::now();
                    // The others are dropped (closed) with the set.
                    return (Some((sent, completed, sock)), attempts, last_error);
                }
                Ok((_, Ok(Err(e)))) => last_error = Some(e.to_string()),
                Ok((_, Err(_))) => last_error = Some(format!("no answer within {attempt:?}")),
                Err(e) => last_error = Some(e.to_string()),
            },
        }
    }
    (None, attempts, last_error)
}

/// One HTTP request on `sock`; the backend the answer names (`X-Backend`).
fn backend_of(mut sock: TcpStream) -> Result<String> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.set_write_timeout(Some(Duration::from_secs(2)))?;
    sock.write_all(b"GET / HTTP/1.1\r\nHost: talaria-lab\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // Bounded: 16 reads of at most 1 KiB, each with a 2 s timeout.
    for _ in 0..16 {
        let n = sock.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(b) = header(&buf, "x-backend") {
            return Ok(b);
        }
    }
    bail!("no X-Backend in {:?}", String::from_utf8_lossy(&buf))
}

/// A complete header's value in a response head read so far.
fn header(buf: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(buf);
    let head = &text[..text.find("\r\n\r\n")?];
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Creates Service `index` (one endpoint: `endpoint`) in the fake API and
/// probes its ClusterIP from the calling thread (in a client pod's netns).
fn measure_one(
    api: &Shared,
    t: &Topology,
    index: u32,
    endpoint: (u32, u32),
    a: &NewServiceArgs,
) -> Sample {
    let spec = spec(t, index, endpoint);
    let (service, slice) = (
        service_object(t, &spec),
        endpoint_slice_object(t, &spec, IpFamily::IPv4),
    );
    let created = {
        let mut api = api.lock().expect("fake API state");
        api.put(Resource::Services, service);
        api.put(Resource::EndpointSlices, slice);
        // Both watch events are in the watches' queues.
        Instant::now()
    };
    let to = SocketAddr::V4(SocketAddrV4::new(t.cluster_ip(index), t.service_http_port));
    let deadline = created + Duration::from_millis(a.give_up_ms);
    let p = probe(
        to,
        Duration::from_millis(a.interval_ms),
        Duration::from_millis(a.attempt_ms),
        deadline,
    );
    let want = Topology::pod_name(endpoint.0, endpoint.1);
    let error = p.error.or_else(|| {
        p.backend
            .as_ref()
            .filter(|b| **b != want)
            .map(|b| format!("answered by {b}, not {want}"))
    });
    Sample {
        name: spec.name,
        vip: t.cluster_ip(index),
        endpoint: want,
        latency: p.completed.map(|c| c - created),
        sent: p.sent.map(|c| c.saturating_duration_since(created)),
        attempts: p.attempts,
        backend: p.backend,
        error,
    }
}

/// Brings the lab up in Kubernetes mode, measures every Service, tears it
/// down.
pub async fn measure(a: &NewServiceArgs, switch: &SwitchKind) -> Result<Report> {
    let t0 = Instant::now();
    let topo = match &a.topology {
        Some(p) => Topology::from_yaml(&std::fs::read_to_string(p)?)?,
        None => Topology::embedded_default(),
    };
    anyhow::ensure!(
        topo.nodes > topo.client_nodes && topo.client_nodes > 0,
        "needs a client node and a backend node"
    );
    let missing = talaria_missing(switch);
    if !missing.is_empty() {
        bail!("talaria mode needs: {}", missing.join("; "));
    }
    let mut lab = Lab::create(topo.clone(), "talaria-k8s", switch.clone())?;
    lab.start_servers()?;
    let t = lab.topo.clone();

    // The fake API: in the switch netns for the controller, in each node
    // netns for its agent.
    let api = Shared::default();
    anyhow::ensure!(
        // ClusterIPs start 10 into the Service CIDR; one warm-up Service.
        u64::from(a.existing) + u64::from(a.count()) + 12
            < 1 << (32 - u32::from(t.service_net().1)),
        "{} Services do not fit in {}",
        a.existing + a.count() + 1,
        t.service_cidr
    );
    seed(&api, &t, a.existing);
    let mut listeners = vec![bind_in(&lab.names.switch(), "127.0.0.1:0")?];
    for n in 0..t.nodes {
        listeners.push(bind_in(&lab.names.node(n), "127.0.0.1:0")?);
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| format!("http://{a}")))
        .collect::<std::io::Result<_>>()?;
    let _server = Server::start_on(talaria_fake_apiserver::router(api.clone()), listeners)?;
    lab.controller_source = Some(json!({"kind": "kubernetes", "api_server": urls[0]}));
    bringup::start_switch(&mut lab, true).await?;

    // The controller's REST API, from each node netns.
    let rest: SocketAddr = CONTROLLER_REST.parse()?;
    let mut relays = Relays::new();
    for n in 0..t.nodes {
        relays.add(
            &lab.names.node(n),
            CONTROLLER_REST,
            &lab.names.switch(),
            rest,
        )?;
    }
    for n in 0..t.nodes {
        let cfg = lab.run_dir.join(format!("talaria-node-{n}.yaml"));
        let controller_url = format!("http://{CONTROLLER_REST}");
        std::fs::write(
            &cfg,
            node_agent_config_k8s(&lab, n, &urls[1 + n as usize], &controller_url),
        )?;
        spawn_node_agent(&mut lab, n, &cfg).await?;
    }

    // Clients: the first pod of node 0; endpoints: every pod of the
    // backend nodes in turn.
    let client = t.client_pods()[0];
    let backends = t.backend_pods();
    let client_ns = lab.names.pod(client.0, client.1);
    let metrics_before = controller_metrics(&lab.names.switch());
    let (args, api2, t2) = (a.clone(), api.clone(), t.clone());
    let count = a.count();
    let first = a.existing;
    let worker = in_netns(&client_ns, move || {
        let warm_up = measure_one(&api2, &t2, first, backends[0], &args);
        let mut samples = Vec::new();
        for i in 0..count {
            std::thread::sleep(Duration::from_millis(args.gap_ms));
            let ep = backends[(i as usize + 1) % backends.len()];
            samples.push(measure_one(&api2, &t2, first + 1 + i, ep, &args));
        }
        Ok((warm_up, samples))
    })?;
    let (warm_up, samples) = tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))??;
    let controller = match (metrics_before, controller_metrics(&lab.names.switch())) {
        (Ok(b), Ok(a)) => Some(ControllerTimes::between(&b, &a)),
        (b, a) => {
            eprintln!(
                "controller metrics: {:?} / {:?}",
                b.err().map(|e| format!("{e:#}")),
                a.err().map(|e| format!("{e:#}"))
            );
            None
        }
    };
    drop(relays);
    let prefix = lab.prefix().to_string();
    for p in lab.down() {
        eprintln!("talaria-lab: teardown: {p}");
    }
    Ok(Report {
        prefix,
        topology: t,
        warm_up,
        samples,
        took_s: t0.elapsed().as_secs_f64(),
        controller,
    })
}

fn ms(us: f64) -> String {
    format!("{:.1}", us / 1000.0)
}

/// The results table (Markdown).
pub fn table(r: &Report) -> String {
    let l = r.latencies_us();
    let max = l.last().copied().unwrap_or(0) as f64;
    let attempts: Vec<u32> = r.samples.iter().map(|s| s.attempts).collect();
    let mean_attempts =
        attempts.iter().map(|&a| f64::from(a)).sum::<f64>() / attempts.len().max(1) as f64;
    let mut s = String::new();
    writeln!(
        s,
        "| Services | served | failures | p50 ms | p90 ms | p99 ms | max ms | mean attempts |"
    )
    .unwrap();
    writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} | {} | {:.1} |",
        r.samples.len(),
        l.len(),
        r.failures(),
        ms(percentile(&l, 0.50)),
        ms(percentile(&l, 0.90)),
        ms(percentile(&l, 0.99)),
        ms(max),
        mean_attempts
    )
    .unwrap();
    s
}

/// One line per Service: name, ClusterIP, endpoint, latency and when the
/// SYN of that connection was sent (ms from creation, empty if not
/// served), attempts, backend, error.
pub fn csv(r: &Report) -> String {
    let mut s =
        String::from("service,cluster_ip,endpoint,latency_ms,syn_sent_ms,attempts,backend,error\n");
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.3}", d.as_secs_f64() * 1000.0))
            .unwrap_or_default()
    };
    for x in &r.samples {
        writeln!(
            s,
            "{},{},{},{},{},{},{},{}",
            x.name,
            x.vip,
            x.endpoint,
            ms(x.latency),
            ms(x.sent),
            x.attempts,
            x.backend.as_deref().unwrap_or(""),
            x.error.as_deref().unwrap_or("").replace(',', ";")
        )
        .unwrap();
    }
    s
}

/// The results as Markdown, with the command that produced them.
pub fn summary(command: &str, a: &NewServiceArgs, r: &Report, load: (&str, &str)) -> String {
    let mut s = String::new();
    let t = &r.topology;
    writeln!(
        s,
        "# A new Service: created → first SYN served at a remote node\n"
    )
    .unwrap();
    s.push_str(&crate::faults::provenance(command, r.took_s, load));
    writeln!(
        s,
        "Lab: {} nodes × {} pods on switch-agent; the controller reads the fake Kubernetes API \
         (`talaria-fake-apiserver`, in this process), the node agents run in Kubernetes mode (Pods from \
         that API, Services by long poll of the controller). {} Services (one endpoint each) exist from the \
         start. Then, for each of {} Services, one after another \
         ({} ms apart): a Service and its EndpointSlice (one endpoint, a pod of a backend node, in turn) \
         are put into the API, which hands their watch events to the controller's open watches: that is \
         the creation time. From pod-n{}-{} (node {}, which holds no endpoint), a fresh TCP connection to \
         the ClusterIP every {} ms (one SYN each, each given {} ms; earlier ones go on waiting), until one \
         completes (at most {} ms after creation): the latency is that completion less the creation. A SYN \
         leaves every {} ms, so the first SYN that could have been served left at most that much before \
         the one that was. The connection must then be answered by the endpoint's pod. One warm-up \
         Service first, not counted ({}).\n",
        t.nodes,
        t.pods_per_node,
        a.existing,
        r.samples.len(),
        a.gap_ms,
        t.client_pods()[0].0,
        t.client_pods()[0].1,
        t.client_pods()[0].0,
        a.interval_ms,
        a.attempt_ms,
        a.give_up_ms,
        a.interval_ms,
        r.warm_up
            .latency
            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "not served".into()),
    )
    .unwrap();
    writeln!(s, "## Results\n\n{}", table(r)).unwrap();
    if let Some(c) = &r.controller {
        writeln!(
            s,
            "The controller's own share, from its metrics over the measured Services (warm-up included): \
             {:.0} plans, {:.1} ms each on average (`talaria_plan_seconds`: model and plan); {:.0} switch \
             syncs, {:.1} ms on average from the change to the switch holding it \
             (`talaria_sync_latency_seconds`). The rest of each latency is the watch events reaching the \
             controller, the long poll answering the backend node's agent and the agent writing its maps, \
             and the connection itself.\n",
            c.plans,
            c.plan_mean_s * 1000.0,
            c.syncs,
            c.sync_mean_s * 1000.0
        )
        .unwrap();
    }
    let failed: Vec<&Sample> = r.samples.iter().filter(|x| !x.ok()).collect();
    if !failed.is_empty() {
        writeln!(s, "Failures:\n").unwrap();
        for x in failed.iter().take(20) {
            writeln!(
                s,
                "- {} ({}): {}",
                x.name,
                x.vip,
                x.error.as_deref().unwrap_or("")
            )
            .unwrap();
        }
        writeln!(s).unwrap();
    }
    writeln!(s, "Every Service: `latencies.csv`.").unwrap();
    s
}

/// `talaria-lab bench-new-service`: measures, prints the table, writes
/// `summary.md` and `latencies.csv` into `--out`. Fails when a Service was
/// not served, after writing the results.
pub async fn run(a: NewServiceArgs, switch: SwitchKind) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let load_at_start = crate::bench::loadavg();
    let r = measure(&a, &switch).await?;
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("latencies.csv"), csv(&r))?;
    let s = summary(&command, &a, &r, (&load_at_start, &crate::bench::loadavg()));
    std::fs::write(a.out.join("summary.md"), &s)?;
    println!("{s}");
    eprintln!("wrote {}/summary.md and latencies.csv", a.out.display());
    if r.failures() > 0 {
        bail!(
            "{} of {} Services were not served",
            r.failures(),
            r.samples.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_times_from_two_metric_readings() {
        let before = "# HELP x\ntalaria_plan_seconds_sum 0.5\ntalaria_plan_seconds_count 10\n\
            talaria_sync_latency_seconds_sum{switch=\"sw\"} 1.0\n\
            talaria_sync_latency_seconds_count{switch=\"sw\"} 10\n";
        let after = "talaria_plan_seconds_sum 1.5\ntalaria_plan_seconds_count 20\n\
            talaria_sync_latency_seconds_sum{switch=\"sw\"} 3.0\n\
            talaria_sync_latency_seconds_count{switch=\"sw\"} 20\n\
            talaria_plan_seconds_bucket{le=\"0.1\"} 20\n";
        let c = ControllerTimes::between(before, after);
        assert_eq!(c.plans, 10.0);
        assert!((c.plan_mean_s - 0.1).abs() < 1e-9);
        assert_eq!(c.syncs, 10.0);
        assert!((c.sync_mean_s - 0.2).abs() < 1e-9);
    }

    #[test]
    fn headers_of_a_partial_response() {
        let full = b"HTTP/1.1 200 OK\r\nX-Backend: pod-n1-0\r\n\r\npod-n1-0\n";
        assert_eq!(header(full, "x-backend").as_deref(), Some("pod-n1-0"));
        assert_eq!(
            header(b"HTTP/1.1 200 OK\r\nX-Backend: pod", "x-backend"),
            None
        );
        assert_eq!(header(b"HTTP/1.1 200 OK\r\n\r\n", "x-backend"), None);
    }
}
