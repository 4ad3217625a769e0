//! The lab's traffic: an HTTP/1.1 + UDP echo server for pods (`serve`) and a
//! tokio load generator (`load`). Both run inside pod namespaces, started
//! with `ip netns exec <pod> talaria-lab serve|load ...`.
//!
//! Responses name the backend pod, so the load generator can report the
//! backend spread and the consistency benchmark can see a connection move.

use crate::stats::Latency;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Hard cap on any single load run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Runs the HTTP and UDP echo servers until `lifetime` passes (bounded, so a
/// server orphaned by a crashed lab dies on its own). With `ipv6` they
/// listen on `[::]`, which (`net.ipv6.bindv6only` being 0 in a pod) takes
/// IPv4 as well; else on `0.0.0.0`, for a pod without IPv6.
pub async fn serve(
    name: String,
    http_port: u16,
    udp_port: u16,
    ipv6: bool,
    ready_file: Option<PathBuf>,
    lifetime: Duration,
) -> anyhow::Result<()> {
    let any = if ipv6 {
        IpAddr::from(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::from(Ipv4Addr::UNSPECIFIED)
    };
    let tcp = TcpListener::bind((any, http_port)).await?;
    let udp = UdpSocket::bind((any, udp_port)).await?;
    if let Some(f) = ready_file {
        std::fs::write(f, format!("{}\n", std::process::id()))?;
    }
    let name: Arc<str> = name.into();
    let n2 = name.clone();
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((len, peer)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let mut out = buf[..len].to_vec();
            out.push(b'|');
            out.extend_from_slice(n2.as_bytes());
            let _ = udp.send_to(&out, peer).await;
        }
    });
    let tcp_task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(http_conn(sock, name.clone()));
        }
    });
    tokio::time::sleep(lifetime).await;
    udp_task.abort();
    tcp_task.abort();
    Ok(())
}

async fn http_conn(mut sock: TcpStream, name: Arc<str>) {
    let body = format!("{name}\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 4096];
    loop {
        // Serve every complete request in the buffer.
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
            if sock.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
        if buf.len() > 64 * 1024 {
            return;
        }
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one HTTP response from the front of `buf`: returns (bytes used,
/// body) once complete.
pub fn parse_response(buf: &[u8]) -> Result<Option<(usize, String)>, String> {
    let Some(hend) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..hend]).map_err(|_| "non-UTF-8 header")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("bad status {status:?}"));
    }
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or("no Content-Length")?;
    let total = hend + 4 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = String::from_utf8_lossy(&buf[hend + 4..total])
        .trim()
        .to_string();
    Ok(Some((total, body)))
}

/// Kinds of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// HTTP, a new TCP connection per request.
    HttpShort,
    /// HTTP keep-alive, one connection per worker.
    HttpLong,
    /// UDP echo.
    Udp,
    /// Consistency probe: N long connections, one request per interval each;
    /// a connection that errors or changes backend counts as broken.
    Hold,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Kind of load.
    pub proto: Proto,
    /// Targets, used round-robin.
    pub targets: Vec<SocketAddr>,
    /// Workers (connections for `hold`).
    pub concurrency: u32,
    /// Run length.
    pub duration: Duration,
    /// Stop after this many requests in total.
    pub max_requests: u64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Gap between requests of one `hold` connection.
    pub interval: Duration,
    /// Stop early once this file exists (checked every 20 ms; requests in
    /// flight finish).
    pub stop_file: Option<PathBuf>,
}

/// One broken `hold` connection: when, which, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    /// When it broke, milliseconds since the Unix epoch (so that the lab
    /// can place it in the phase it happened in).
    pub at_ms: u64,
    /// The connection (worker) index.
    pub connection: u32,
    /// Its target.
    pub target: SocketAddr,
    /// What happened: the error, `timeout`, or `moved <first> -> <now>`.
    pub reason: String,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    /// Kind of load.
    pub proto: String,
    /// Workers.
    pub concurrency: u32,
    /// Seconds measured.
    pub duration_s: f64,
    /// Successful requests.
    pub requests: u64,
    /// Failed requests (connect/read errors, timeouts, lost UDP replies).
    pub errors: u64,
    /// Failed requests by what went wrong (`timeout`, `connect timeout`,
    /// the OS error, `connection closed`, `no reply`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_kinds: BTreeMap<String, u64>,
    /// Requests per second.
    pub rps: f64,
    /// Latency of successful requests.
    pub latency: Latency,
    /// Responses per backend pod.
    pub backends: BTreeMap<String, u64>,
    /// `hold`: connections opened.
    pub connections: u64,
    /// `hold`: connections broken (error, reset or moved backend).
    pub broken: u64,
    /// `hold`: of the broken, how many answered from another backend.
    pub moved: u64,
    /// `hold`: every broken connection, in the order they broke.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaks: Vec<Break>,
    /// CPU time (user + system) the load generator itself used, microseconds.
    pub self_cpu_us: f64,
}

struct Shared {
    issued: AtomicU64,
    max: u64,
    deadline: Instant,
    /// Set once the stop file appears.
    stopped: AtomicBool,
}

impl Shared {
    fn go(&self) -> bool {
        self.live() && self.issued.fetch_add(1, Ordering::Relaxed) < self.max
    }

    /// Before the deadline and not stopped.
    fn live(&self) -> bool {
        Instant::now() < self.deadline && !self.stopped.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct WorkerOut {
    lat: Vec<u32>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    backends: BTreeMap<String, u64>,
    broken: u64,
    moved: u64,
    breaks: Vec<Break>,
    connections: u64,
}

impl WorkerOut {
    /// Counts a failed request, by what went wrong.
    fn fail(&mut self, why: String) {
        self.errors += 1;
        *self.error_kinds.entry(why).or_default() += 1;
    }

    /// Counts a `hold` connection as broken.
    fn broke(&mut self, id: usize, target: SocketAddr, reason: String, moved: bool) {
        self.broken += 1;
        self.moved += u64::from(moved);
        self.breaks.push(Break {
            at_ms: unix_ms(),
            connection: id as u32,
            target,
            reason,
        });
    }
}

const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: talaria-lab\r\nUser-Agent: talaria-lab\r\n\r\n";

async fn http_exchange(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<String, String> {
    sock.write_all(REQ).await.map_err(|e| e.to_string())?;
    let mut tmp = [0u8; 4096];
    loop {
        if let Some((used, body)) = parse_response(buf)? {
            buf.drain(..used);
            return Ok(body);
        }
        match sock.read(&mut tmp).await {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

async fn worker(id: usize, spec: Arc<LoadSpec>, sh: Arc<Shared>) -> WorkerOut {
    let mut out = WorkerOut::default();
    let n = spec.targets.len();
    let mut i = id;
    match spec.proto {
        Proto::HttpShort => {
            while sh.go() {
                let target = spec.targets[i % n];
                i += 1;
                let t0 = Instant::now();
                let r = tokio::time::timeout(spec.timeout, async {
                    let mut s = connect(target, spec.timeout).await?;
                    let mut buf = Vec::new();
                    http_exchange(&mut s, &mut buf).await
                })
                .await;
                match r {
                    Ok(Ok(b)) => {
                        out.lat.push(t0.elapsed().as_micros() as u32);
                        *out.backends.entry(b).or_default() += 1;
                    }
                    Ok(Err(e)) => out.fail(e),
                    Err(_) => out.fail("timeout".into()),
                }
            }
        }
        Proto::HttpLong => {
            let target = spec.targets[id % n];
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::new();
            while sh.go() {
                let t0 = Instant::now();
                if conn.is_none() {
                    match connect(target, spec.timeout).await {
                        Ok(s) => {
                            buf.clear();
                            conn = Some(s)
                        }
                        Err(e) => {
                            out.fail(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let s = conn.as_mut().unwrap();
                match tokio::time::timeout(spec.timeout, http_exchange(s, &mut buf)).await {
                    Ok(Ok(b)) => {
                        out.lat.push(t0.elapsed().as_micros() as u32);
                        *out.backends.entry(b).or_default() += 1;
                    }
                    Ok(Err(e)) => {
                        out.fail(e);
                        conn = None;
                    }
                    Err(_) => {
                        out.fail("timeout".into());
                        conn = None;
                    }
                }
            }
        }
        Proto::Udp => {
            // A dual-stack socket when any target is IPv6: it reaches
            // IPv4 targets too.
            let any: SocketAddr = if spec.targets.iter().any(SocketAddr::is_ipv6) {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let sock = match UdpSocket::bind(any).await {
                Ok(s) => s,
                Err(e) => {
                    out.fail(format!("bind: {e}"));
                    return out;
                }
            };
            let mut buf = vec![0u8; 2048];
            let mut seq: u64 = 0;
            while sh.go() {
                let target = spec.targets[i % n];
                i += 1;
                seq += 1;
                let msg = format!("talaria-lab {id} {seq}");
                let t0 = Instant::now();
                if let Err(e) = sock.send_to(msg.as_bytes(), target).await {
                    out.fail(format!("send: {e}"));
                    continue;
                }
                let deadline = t0 + spec.timeout;
                let mut ok = false;
                // Skip late replies to earlier requests.
                while let Ok(Ok((len, _))) =
                    tokio::time::timeout_at(deadline.into(), sock.recv_from(&mut buf)).await
                {
                    let got = &buf[..len];
                    if got.starts_with(msg.as_bytes()) && got.get(msg.len()) == Some(&b'|') {
                        out.lat.push(t0.elapsed().as_micros() as u32);
                        let b = String::from_utf8_lossy(&got[msg.len() + 1..]).to_string();
                        *out.backends.entry(b).or_default() += 1;
                        ok = true;
                        break;
                    }
                }
                if !ok {
                    out.fail("no reply".into());
                }
            }
        }
        Proto::Hold => {
            let target = spec.targets[id % n];
            out.connections = 1;
            let mut s = match connect(target, spec.timeout).await {
                Ok(s) => s,
                Err(e) => {
                    let e = format!("connect: {e}");
                    out.fail(e.clone());
                    out.broke(id, target, e, false);
                    return out;
                }
            };
            let mut buf = Vec::new();
            let mut first: Option<String> = None;
            while sh.live() {
                let t0 = Instant::now();
                match tokio::time::timeout(spec.timeout, http_exchange(&mut s, &mut buf)).await {
                    Ok(Ok(b)) => {
                        out.lat.push(t0.elapsed().as_micros() as u32);
                        *out.backends.entry(b.clone()).or_default() += 1;
                        match &first {
                            None => first = Some(b),
                            Some(f) if *f != b => {
                                out.broke(id, target, format!("moved {f} -> {b}"), true);
                                return out;
                            }
                            _ => {}
                        }
                    }
                    Ok(Err(e)) => {
                        out.fail(e.clone());
                        out.broke(id, target, e, false);
                        return out;
                    }
                    Err(_) => {
                        out.fail("timeout".into());
                        let reason = format!("no answer within {:?}", spec.timeout);
                        out.broke(id, target, reason, false);
                        return out;
                    }
                }
                let left = sh.deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(spec.interval.min(left)).await;
            }
        }
    }
    out
}

/// Runs a load spec to completion (bounded by its duration, capped at
/// [`MAX_DURATION`], and by `max_requests`).
pub async fn run_load(spec: LoadSpec) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(!spec.targets.is_empty(), "no targets");
    anyhow::ensure!(spec.concurrency > 0, "concurrency must be > 0");
    let duration = spec.duration.min(MAX_DURATION);
    let start = Instant::now();
    let sh = Arc::new(Shared {
        issued: AtomicU64::new(0),
        max: spec.max_requests,
        deadline: start + duration,
        stopped: AtomicBool::new(false),
    });
    let watcher = spec.stop_file.clone().map(|f| {
        let sh = sh.clone();
        tokio::spawn(async move {
            while !f.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sh.stopped.store(true, Ordering::Relaxed);
        })
    });
    let spec = Arc::new(spec);
    let tasks: Vec<_> = (0..spec.concurrency as usize)
        .map(|id| tokio::spawn(worker(id, spec.clone(), sh.clone())))
        .collect();
    let mut lat = Vec::new();
    let mut res = LoadResult {
        proto: format!("{:?}", spec.proto),
        concurrency: spec.concurrency,
        ..Default::default()
    };
    for t in tasks {
        let o = t.await?;
        lat.extend(o.lat);
        res.errors += o.errors;
        for (k, v) in o.error_kinds {
            *res.error_kinds.entry(k).or_default() += v;
        }
        res.broken += o.broken;
        res.moved += o.moved;
        res.breaks.extend(o.breaks);
        res.connections += o.connections;
        for (k, v) in o.backends {
            *res.backends.entry(k).or_default() += v;
        }
    }
    if let Some(w) = watcher {
        w.abort();
    }
    res.breaks.sort_by_key(|b| b.at_ms);
    res.duration_s = start.elapsed().as_secs_f64();
    res.requests = lat.len() as u64;
    res.rps = res.requests as f64 / res.duration_s.max(1e-9);
    res.latency = Latency::from_samples(&mut lat);
    res.self_cpu_us =
        crate::cpu::process_jiffies(std::process::id()) as f64 * 1e6 / crate::cpu::clk_tck() as f64;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"),
            Ok(None)
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nConte"), Ok(None));
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npod\nHTTP").unwrap();
        assert_eq!(r, Some((42, "pod".to_string())));
        assert!(parse_response(b"HTTP/1.1 503 Unavailable\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    /// Loopback only: a server on ephemeral ports and every load kind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loopback_serve_and_load() {
        let http = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("talaria-lab-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ready = dir.join("ready");
        tokio::spawn(serve(
            "pod-x".into(),
            http,
            udp,
            false,
            Some(ready.clone()),
            Duration::from_secs(30),
        ));
        for _ in 0..200 {
            if ready.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mk = |proto, port| LoadSpec {
            proto,
            targets: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            concurrency: 2,
            duration: Duration::from_millis(300),
            max_requests: 200,
            timeout: Duration::from_secs(1),
            interval: Duration::from_millis(20),
            stop_file: None,
        };
        for (proto, port) in [
            (Proto::HttpShort, http),
            (Proto::HttpLong, http),
            (Proto::Udp, udp),
        ] {
            let r = run_load(mk(proto, port)).await.unwrap();
            assert!(r.requests > 0, "{proto:?}: {r:?}");
            assert_eq!(r.errors, 0, "{proto:?}: {r:?}");
            assert_eq!(r.backends.keys().collect::<Vec<_>>(), vec!["pod-x"]);
            assert!(r.requests <= 200);
        }
        let r = run_load(mk(Proto::Hold, http)).await.unwrap();
        assert_eq!((r.connections, r.broken), (2, 0));
        assert!(r.breaks.is_empty());
        // Errors are counted by kind; nothing listens on the UDP port's
        // number over TCP.
        let r = run_load(mk(Proto::HttpShort, udp)).await.unwrap();
        assert_eq!(r.requests, 0);
        assert_eq!(r.error_kinds.values().sum::<u64>(), r.errors);
        assert!(
            r.error_kinds.keys().all(|k| k.contains("refused")),
            "{:?}",
            r.error_kinds
        );
        // A stop file ends any load early.
        let stop = dir.join("stop");
        std::fs::write(&stop, b"").unwrap();
        let t0 = Instant::now();
        let r = run_load(LoadSpec {
            duration: Duration::from_secs(20),
            max_requests: u64::MAX,
            stop_file: Some(stop),
            ..mk(Proto::HttpShort, http)
        })
        .await
        .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "{r:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
