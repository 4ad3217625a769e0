//! kube-proxy's per-Service health check (`pkg/proxy/healthcheck/
//! service_health.go`): for every LoadBalancer Service with
//! `externalTrafficPolicy: Local`, the node answers HTTP on the Service's
//! `healthCheckNodePort`, 200 when it has a ready endpoint of the Service
//! and the agent is in sync with the controller, 503 otherwise, with
//! kube-proxy's JSON body. Cloud load balancers use it to send traffic only
//! to nodes that can serve it without leaving the node.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{Error, Result};

/// One Service's health check, as this node answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    /// `spec.healthCheckNodePort`.
    pub node_port: u16,
    /// This node's ready endpoints of the Service.
    pub local_endpoints: usize,
}

/// How long after its last answer from the controller the agent still
/// calls itself healthy: two long polls, as kube-proxy allows two sync
/// periods.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// What every listener answers from.
#[derive(Default)]
struct State {
    /// Port → the check served on it.
    checks: BTreeMap<u16, HealthCheck>,
    /// When the controller last answered.
    synced: Option<Instant>,
}

/// The listeners, one per health check port, on `bind` (0.0.0.0: every
/// node address, as kube-proxy's default).
pub struct HealthServer {
    bind: Ipv4Addr,
    state: Arc<Mutex<State>>,
    listeners: BTreeMap<u16, JoinHandle<()>>,
}

impl HealthServer {
    pub fn new(bind: Ipv4Addr) -> Self {
        Self {
            bind,
            state: Arc::default(),
            listeners: BTreeMap::new(),
        }
    }

    /// The controller answered with `checks`: ports no longer named close,
    /// new ones open, counts change in place. A port that cannot be bound
    /// is reported and retried at the next sync; the others are served.
    pub async fn sync(&mut self, checks: &[HealthCheck]) -> Result<()> {
        {
            let mut st = self.state.lock().expect("health state");
            st.synced = Some(Instant::now());
            st.checks = checks.iter().map(|c| (c.node_port, c.clone())).collect();
        }
        self.listeners.retain(|port, task| {
            let keep = checks.iter().any(|c| c.node_port == *port);
            if !keep {
                info!(port, "health check closed");
                task.abort();
            }
            keep
        });
        let mut failed = None;
        for c in checks {
            if self.listeners.contains_key(&c.node_port) {
                continue;
            }
            let addr = SocketAddr::from((self.bind, c.node_port));
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    info!(port = c.node_port, service = %format!("{}/{}", c.namespace, c.name), "health check open");
                    let task = tokio::spawn(serve(l, c.node_port, self.state.clone()));
                    self.listeners.insert(c.node_port, task);
                }
                Err(e) => {
                    warn!(port = c.node_port, error = %e, "health check port");
                    failed.get_or_insert(Error::io(format!("bind {addr}"), e));
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// The ports served.
    pub fn ports(&self) -> Vec<u16> {
        self.listeners.keys().copied().collect()
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        for task in self.listeners.values() {
            task.abort();
        }
    }
}

/// Answers every request on `port` from `state` (the request itself is
/// not looked at, as kube-proxy's handler does not).
async fn serve(listener: TcpListener, port: u16, state: Arc<Mutex<State>>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            // Out of descriptors, most likely: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (status, body) = answer(&state.lock().expect("health state"), port);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await;
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                 x-content-type-options: nosniff\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// The status line and body for `port`: kube-proxy's JSON.
fn answer(st: &State, port: u16) -> (&'static str, String) {
    let healthy = st.synced.is_some_and(|t| t.elapsed() < SYNC_TIMEOUT);
    let (namespace, name, count) = st.checks.get(&port).map_or(("", "", 0), |c| {
        (&*c.namespace, &*c.name, c.local_endpoints)
    });
    let status = if count > 0 && healthy {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    let body = serde_json::json!({
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": count,
        "serviceProxyHealthy": healthy,
    });
    (
        status,
        serde_json::to_string_pretty(&body).expect("JSON of a value"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(count: usize) -> HealthCheck {
        HealthCheck {
            namespace: "ns".into(),
            name: "web".into(),
            node_port: 32000,
            local_endpoints: count,
        }
    }

    #[test]
    fn answers_like_kube_proxy() {
        let mut st = State::default();
        st.checks.insert(32000, check(2));
        let (status, body) = answer(&st, 32000);
        assert_eq!(status, "503 Service Unavailable", "never synced");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["serviceProxyHealthy"], false);
        st.synced = Some(Instant::now());
        let (status, body) = answer(&st, 32000);
        assert_eq!(status, "200 OK");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "service": {"namespace": "ns", "name": "web"},
                "localEndpoints": 2,
                "serviceProxyHealthy": true,
            })
        );
        st.checks.insert(32000, check(0));
        assert_eq!(answer(&st, 32000).0, "503 Service Unavailable");
    }

    /// One GET on loopback: status code and JSON body, or None when
    /// nothing listens.
    async fn get(port: u16) -> Option<(u16, serde_json::Value)> {
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut resp))
            .await
            .expect("answered in time")
            .unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        let code = head[9..12].parse().unwrap();
        Some((code, serde_json::from_str(body).unwrap()))
    }

    /// A port free on loopback right now.
    fn free_port() -> u16 {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn serves_opens_and_closes_ports_as_checks_come_and_go() {
        let port = free_port();
        let mut h = HealthServer::new(Ipv4Addr::LOCALHOST);
        let with = |count| HealthCheck {
            node_port: port,
            ..check(count)
        };
        h.sync(&[with(1)]).await.unwrap();
        assert_eq!(h.ports(), vec![port]);
        let (code, v) = get(port).await.expect("listening");
        assert_eq!(code, 200);
        assert_eq!(v["localEndpoints"], 1);
        assert_eq!(v["service"]["name"], "web");
        h.sync(&[with(0)]).await.unwrap();
        assert_eq!(
            get(port).await.unwrap().0,
            503,
            "the last local endpoint went"
        );
        h.sync(&[with(3)]).await.unwrap();
        assert_eq!(get(port).await.unwrap().0, 200);
        h.sync(&[]).await.unwrap();
        assert!(h.ports().is_empty());
        // The aborted listener's socket closes once its task is dropped.
        let mut closed = false;
        for _ in 0..50 {
            if get(port).await.is_none() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed, "port {port} still served after its check went");
    }
}
