//! The Prometheus `/metrics` endpoint: data plane counters (drops per
//! reason, and per ingress port and reason; load-balancer events;
//! per-service packets and bytes), table occupancy, per-port interface and
//! pipeline statistics, and P4Runtime write outcomes.
//! Every metric name starts with `talaria_switch_`.
//!
//! The endpoint is a deliberately tiny HTTP/1.1 responder (one request per
//! connection, `Connection: close`): Prometheus needs nothing more.

use std::{fmt::Write as _, path::Path, sync::atomic::Ordering, sync::Arc};

use talaria_common::drop::{DropReason, LbEvent};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
};
use tracing::debug;

use crate::{
    config::PortSpec,
    entry::{CounterId, Entry, TableKind},
    server::Switch,
};

/// What `/metrics` reports on.
pub struct Metrics {
    pub switch: Arc<Switch>,
    /// Switch ports, for per-port interface statistics.
    pub ports: Vec<PortSpec>,
    /// Where interface statistics live (`/sys/class/net`), replaceable in
    /// tests.
    pub sysfs_net: std::path::PathBuf,
    /// The eBPF data plane, for its per-port pipeline counters.
    pub dataplane: Option<Arc<talaria_switch_dataplane::Dataplane>>,
}

fn table_name(t: TableKind) -> &'static str {
    match t {
        TableKind::Ipv4Route => "ipv4_route",
        TableKind::SwitchAddr => "switch_addr",
        TableKind::ServiceV4 => "service_v4",
        TableKind::CookieCheck => "cookie_check",
        TableKind::LbBucket => "lb_bucket",
        TableKind::Backend => "backend",
        TableKind::PodNode => "pod_node",
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn read_stat(dir: &Path, ifname: &str, stat: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(ifname).join("statistics").join(stat))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Metrics {
    /// The metrics page in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let target = self.switch.target();

        header(
            &mut out,
            "talaria_switch_drops_total",
            "counter",
            "Packets dropped by the switch pipeline, by reason.",
        );
        for r in DropReason::ALL {
            if let Ok(c) = target.counter(CounterId::Drop, u32::from(r.code())) {
                let _ = writeln!(
                    out,
                    "talaria_switch_drops_total{{reason=\"{}\"}} {}",
                    r.name(),
                    c.packets
                );
            }
        }
        header(
            &mut out,
            "talaria_switch_lb_events_total",
            "counter",
            "Load-balancer decisions, by kind.",
        );
        for e in LbEvent::ALL {
            if let Ok(c) = target.counter(CounterId::LbEvent, e as u32) {
                let _ = writeln!(
                    out,
                    "talaria_switch_lb_events_total{{event=\"{}\"}} {}",
                    e.name(),
                    c.packets
                );
            }
        }

        let layout = self.switch.layout();
        header(
            &mut out,
            "talaria_switch_table_entries",
            "gauge",
            "Entries in each P4 table.",
        );
        let mut services = Vec::new();
        for t in layout.tables() {
            if let Ok(entries) = target.entries(t.kind) {
                let _ = writeln!(
                    out,
                    "talaria_switch_table_entries{{table=\"{}\"}} {}",
                    table_name(t.kind),
                    entries.len()
                );
                if t.kind == TableKind::ServiceV4 {
                    services = entries
                        .iter()
                        .filter_map(|e| match e {
                            Entry::ServiceV4 { service_id, .. } => Some(*service_id),
                            _ => None,
                        })
                        .collect();
                }
            }
        }
        header(
            &mut out,
            "talaria_switch_table_size",
            "gauge",
            "Capacity (P4 size) of each P4 table.",
        );
        for t in layout.tables() {
            let _ = writeln!(
                out,
                "talaria_switch_table_size{{table=\"{}\"}} {}",
                table_name(t.kind),
                t.size
            );
        }
        services.sort_unstable();
        services.dedup();
        header(
            &mut out,
            "talaria_switch_service_packets_total",
            "counter",
            "Packets load-balanced per configured service id.",
        );
        let mut bytes = String::new();
        for s in &services {
            if let Ok(c) = target.counter(CounterId::Service, u32::from(*s)) {
                let _ = writeln!(
                    out,
                    "talaria_switch_service_packets_total{{service_id=\"{s}\"}} {}",
                    c.packets
                );
                let _ = writeln!(
                    bytes,
                    "talaria_switch_service_bytes_total{{service_id=\"{s}\"}} {}",
                    c.bytes
                );
            }
        }
        header(
            &mut out,
            "talaria_switch_service_bytes_total",
            "counter",
            "Bytes load-balanced per configured service id.",
        );
        out.push_str(&bytes);

        let stats = [
            (
                "rx_packets",
                "talaria_switch_port_rx_packets_total",
                "Packets received on a switch port.",
            ),
            (
                "tx_packets",
                "talaria_switch_port_tx_packets_total",
                "Packets sent on a switch port.",
            ),
            (
                "rx_bytes",
                "talaria_switch_port_rx_bytes_total",
                "Bytes received on a switch port.",
            ),
            (
                "tx_bytes",
                "talaria_switch_port_tx_bytes_total",
                "Bytes sent on a switch port.",
            ),
            (
                "rx_dropped",
                "talaria_switch_port_rx_dropped_total",
                "Packets the kernel dropped on receive.",
            ),
            (
                "tx_dropped",
                "talaria_switch_port_tx_dropped_total",
                "Packets the kernel dropped on transmit.",
            ),
        ];
        for (stat, name, help) in stats {
            header(&mut out, name, "counter", help);
            for p in &self.ports {
                if let Some(v) = read_stat(&self.sysfs_net, &p.ifname, stat) {
                    let _ = writeln!(
                        out,
                        "{name}{{port=\"{}\",interface=\"{}\"}} {v}",
                        p.port, p.ifname
                    );
                }
            }
        }

        if let Some(dp) = &self.dataplane {
            if let Ok(ports) = dp.port_stats() {
                let rows = [
                    (
                        "talaria_switch_pipeline_port_rx_packets_total",
                        "Packets the pipeline received per port.",
                    ),
                    (
                        "talaria_switch_pipeline_port_rx_bytes_total",
                        "Bytes the pipeline received per port.",
                    ),
                    (
                        "talaria_switch_pipeline_port_tx_packets_total",
                        "Packets the pipeline sent out of each port.",
                    ),
                    (
                        "talaria_switch_pipeline_port_tx_bytes_total",
                        "Bytes the pipeline sent out of each port.",
                    ),
                ];
                for (k, (name, help)) in rows.iter().enumerate() {
                    header(&mut out, name, "counter", help);
                    for p in &ports {
                        let c = if k < 2 { p.rx } else { p.tx };
                        let v = if k % 2 == 0 { c.packets } else { c.bytes };
                        let _ = writeln!(
                            out,
                            "{name}{{port=\"{}\",interface=\"{}\"}} {v}",
                            p.port, p.ifname
                        );
                    }
                }
                let name = "talaria_switch_port_drops_total";
                header(
                    &mut out,
                    name,
                    "counter",
                    "Packets the pipeline dropped, by ingress port and reason.",
                );
                for p in &ports {
                    for (reason, c) in &p.drops {
                        let _ = writeln!(
                            out,
                            "{name}{{port=\"{}\",interface=\"{}\",reason=\"{}\"}} {}",
                            p.port,
                            p.ifname,
                            reason.name(),
                            c.packets
                        );
                    }
                }
            }
        }
        header(
            &mut out,
            "talaria_switch_p4rt_updates_total",
            "counter",
            "P4Runtime Write updates, by type and result.",
        );
        for (i, op) in ["insert", "modify", "delete"].iter().enumerate() {
            for (j, result) in ["ok", "error"].iter().enumerate() {
                let n = self.switch.stats.updates[i][j].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "talaria_switch_p4rt_updates_total{{type=\"{op}\",result=\"{result}\"}} {n}"
                );
            }
        }
        header(
            &mut out,
            "talaria_switch_pipeline_configured",
            "gauge",
            "1 when a P4Runtime pipeline config is committed.",
        );
        let _ = writeln!(
            out,
            "talaria_switch_pipeline_configured {}",
            u8::from(self.switch.configured())
        );
        out
    }

    /// Serves `/metrics` on `listener` until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let (mut sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        debug!(error = %e, "metrics accept failed");
                        continue;
                    }
                },
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let me = self.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                // Read the request head (bounded), then answer and close.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        sock.read(&mut chunk),
                    )
                    .await
                    {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&buf);
                let mut words = line.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let (status, ctype, body) =
                    if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
                        let m = me.clone();
                        let body = tokio::task::spawn_blocking(move || m.render())
                            .await
                            .unwrap_or_default();
                        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
                    } else {
                        (
                            "404 Not Found",
                            "text/plain; charset=utf-8",
                            "try /metrics\n".to_string(),
                        )
                    };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
                debug!(%peer, path, "metrics request");
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{layout::Layout, memory::MemoryTarget};
    use talaria_common::maps::PacketBytes;

    #[test]
    fn renders_counters_ports_and_tables() {
        let layout = Arc::new(Layout::talaria().unwrap());
        let target = Arc::new(MemoryTarget::new(|_| 10));
        target.set_counter(
            CounterId::Drop,
            DropReason::NoService.code().into(),
            PacketBytes {
                packets: 4,
                bytes: 0,
            },
        );
        let (_tx, rx) = watch::channel(false);
        let switch = Arc::new(Switch::new(1, layout, target, None, rx).unwrap());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("veth1/statistics")).unwrap();
        std::fs::write(dir.path().join("veth1/statistics/rx_packets"), "17\n").unwrap();
        let m = Metrics {
            switch,
            ports: vec!["1@veth1".parse().unwrap()],
            sysfs_net: dir.path().into(),
            dataplane: None,
        };
        let text = m.render();
        assert!(
            text.contains("talaria_switch_drops_total{reason=\"no_service\"} 4"),
            "{text}"
        );
        assert!(
            text.contains(
                "talaria_switch_port_rx_packets_total{port=\"1\",interface=\"veth1\"} 17"
            ),
            "{text}"
        );
        assert!(
            text.contains("talaria_switch_table_entries{table=\"backend\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("talaria_switch_pipeline_configured 0"),
            "{text}"
        );
    }
}
