//! The Prometheus `/metrics` endpoint: a prometheus-client [`Collector`]
//! that reads, on every scrape, the data plane's counters (drops per
//! reason, and per ingress port and reason; load-balancer events;
//! per-service packets and bytes), table occupancy and sizes, per-port
//! interface and pipeline statistics, and P4Runtime write outcomes.
//! Every metric name starts with [`PREFIX`]; prometheus-client appends
//! `_total` to counters.
//!
//! The endpoint is a deliberately tiny HTTP/1.1 responder (one request per
//! connection, `Connection: close`) of the OpenMetrics text: Prometheus
//! needs nothing more.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use talaria_common::drop::{DropReason, LbEvent};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
};
use tracing::debug;

use crate::{
    config::PortSpec,
    entry::{CounterId, Entry, Table},
    server::Switch,
};

/// Metric name prefix.
pub const PREFIX: &str = "talaria_switch";

/// What `/metrics` reports on; a [`Collector`] that reads it all on every
/// scrape.
pub struct Metrics {
    pub switch: Arc<Switch>,
    /// Switch ports, for per-port interface statistics.
    pub ports: Vec<PortSpec>,
    /// Where interface statistics live (`/sys/class/net`), replaceable in
    /// tests.
    pub sysfs_net: PathBuf,
    /// The eBPF data plane, for its per-port pipeline counters.
    pub dataplane: Option<Arc<talaria_switch_dataplane::Dataplane>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("ports", &self.ports)
            .field("sysfs_net", &self.sysfs_net)
            .field("dataplane", &self.dataplane.is_some())
            .finish_non_exhaustive()
    }
}

fn read_stat(dir: &Path, ifname: &str, stat: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(ifname).join("statistics").join(stat))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One metric family of counters or gauges, one sample per label set.
fn family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut f = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        let m = f.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(m)?,
            _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)?,
        }
    }
    Ok(())
}

/// A per-port value of the data plane's counters.
type PortValue = fn(&talaria_switch_dataplane::PortStats) -> u64;

/// The labels of a switch port.
fn port_labels(port: u16, ifname: &str) -> [(&'static str, String); 2] {
    [("port", port.to_string()), ("interface", ifname.to_owned())]
}

impl Metrics {
    fn encode_counters(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let target = self.switch.target();
        family(
            enc,
            "drops",
            "Packets dropped by the switch pipeline, by reason.",
            MetricType::Counter,
            DropReason::ALL.iter().filter_map(|r| {
                let c = target.counter(CounterId::Drop, r.code().into()).ok()?;
                Some(([("reason", r.name())], c.packets))
            }),
        )?;
        family(
            enc,
            "lb_events",
            "Load-balancer decisions, by kind.",
            MetricType::Counter,
            LbEvent::ALL.iter().filter_map(|e| {
                let c = target.counter(CounterId::LbEvent, *e as u32).ok()?;
                Some(([("event", e.name())], c.packets))
            }),
        )?;

        let mut occupancy = Vec::new();
        let mut services = Vec::new();
        for &t in Table::ALL {
            let Ok(entries) = target.entries(t) else {
                continue;
            };
            occupancy.push(([("table", t.alias())], entries.len() as u64));
            services.extend(entries.iter().filter_map(|e| match e {
                Entry::ServiceV4(s) => match s.action {
                    talaria_tables::service_v4::Action::SetService { service_id, .. } => {
                        Some(service_id)
                    }
                },
                _ => None,
            }));
        }
        family(
            enc,
            "table_entries",
            "Entries in each P4 table.",
            MetricType::Gauge,
            occupancy,
        )?;
        family(
            enc,
            "table_size",
            "Capacity (P4 size) of each P4 table.",
            MetricType::Gauge,
            Table::ALL
                .iter()
                .map(|t| ([("table", t.alias())], u64::from(t.size()))),
        )?;
        services.sort_unstable();
        services.dedup();
        let cells: Vec<_> = services
            .iter()
            .filter_map(|s| {
                let c = target.counter(CounterId::Service, u32::from(*s)).ok()?;
                Some(([("service_id", s.to_string())], c))
            })
            .collect();
        family(
            enc,
            "service_packets",
            "Packets load-balanced per configured service id.",
            MetricType::Counter,
            cells.iter().map(|(l, c)| (l.clone(), c.packets)),
        )?;
        family(
            enc,
            "service_bytes",
            "Bytes load-balanced per configured service id.",
            MetricType::Counter,
            cells.iter().map(|(l, c)| (l.clone(), c.bytes)),
        )
    }

    fn encode_ports(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let stats = [
            ("rx_packets", "Packets received on a switch port."),
            ("tx_packets", "Packets sent on a switch port."),
            ("rx_bytes", "Bytes received on a switch port."),
            ("tx_bytes", "Bytes sent on a switch port."),
            ("rx_dropped", "Packets the kernel dropped on receive."),
            ("tx_dropped", "Packets the kernel dropped on transmit."),
        ];
        for (stat, help) in stats {
            family(
                enc,
                &format!("port_{stat}"),
                help,
                MetricType::Counter,
                self.ports.iter().filter_map(|p| {
                    let v = read_stat(&self.sysfs_net, &p.ifname, stat)?;
                    Some((port_labels(p.port, &p.ifname), v))
                }),
            )?;
        }

        let Some(ports) = self.dataplane.as_ref().and_then(|dp| dp.port_stats().ok()) else {
            return Ok(());
        };
        let rows: [(&str, &str, PortValue); 4] = [
            (
                "pipeline_port_rx_packets",
                "Packets the pipeline received per port.",
                |p| p.rx.packets,
            ),
            (
                "pipeline_port_rx_bytes",
                "Bytes the pipeline received per port.",
                |p| p.rx.bytes,
            ),
            (
                "pipeline_port_tx_packets",
                "Packets the pipeline sent out of each port.",
                |p| p.tx.packets,
            ),
            (
                "pipeline_port_tx_bytes",
                "Bytes the pipeline sent out of each port.",
                |p| p.tx.bytes,
            ),
        ];
        for (name, help, value) in rows {
            family(
                enc,
                name,
                help,
                MetricType::Counter,
                ports
                    .iter()
                    .map(|p| (port_labels(p.port, &p.ifname), value(p))),
            )?;
        }
        family(
            enc,
            "port_drops",
            "Packets the pipeline dropped, by ingress port and reason.",
            MetricType::Counter,
            ports.iter().flat_map(|p| {
                p.drops.iter().map(|(reason, c)| {
                    let [port, interface] = port_labels(p.port, &p.ifname);
                    (
                        [port, interface, ("reason", reason.name().to_owned())],
                        c.packets,
                    )
                })
            }),
        )
    }

    fn encode_server(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let updates = &self.switch.stats.updates;
        family(
            enc,
            "p4rt_updates",
            "P4Runtime Write updates, by type and result.",
            MetricType::Counter,
            ["insert", "modify", "delete"]
                .iter()
                .enumerate()
                .flat_map(|(i, op)| {
                    ["ok", "error"].iter().enumerate().map(move |(j, result)| {
                        (
                            [("type", *op), ("result", *result)],
                            updates[i][j].load(Ordering::Relaxed),
                        )
                    })
                }),
        )?;
        let configured = ConstGauge::new(i64::from(self.switch.configured()));
        configured.encode(enc.encode_descriptor(
            "pipeline_configured",
            "1 when a P4Runtime pipeline config is committed.",
            None,
            configured.metric_type(),
        )?)
    }
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.encode_counters(&mut enc)?;
        self.encode_ports(&mut enc)?;
        self.encode_server(&mut enc)
    }
}

/// The registry of the switch's metrics.
pub fn registry(metrics: Metrics) -> Registry {
    let mut r = Registry::with_prefix(PREFIX);
    r.register_collector(Box::new(metrics));
    r
}

/// The registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}

/// Serves `/metrics` from `registry` on `listener` until `shutdown` turns
/// true.
pub async fn serve(
    registry: Arc<Registry>,
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
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            // Read the request head (bounded), then answer and close.
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut chunk))
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
                    // Reading the data plane's maps is syscalls: off the
                    // async workers.
                    let body = tokio::task::spawn_blocking(move || render(&registry))
                        .await
                        .unwrap_or_default();
                    (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        body,
                    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{entry::Target, memory::MemoryTarget};
    use talaria_common::maps::PacketBytes;
    use talaria_tables::service_v4;

    #[test]
    fn renders_counters_ports_and_tables() {
        let target = Arc::new(MemoryTarget::with_sizes(|_| 10));
        target.set_counter(
            CounterId::Drop,
            DropReason::NoService.code().into(),
            PacketBytes {
                packets: 4,
                bytes: 0,
            },
        );
        target
            .insert(&Entry::ServiceV4(service_v4::Entry {
                key: service_v4::Key {
                    vip: [10, 96, 0, 10].into(),
                    port: 80,
                    proto: 6,
                },
                action: service_v4::Action::SetService {
                    service_id: 7,
                    bucket_mask: 15,
                    hash_mode: 0,
                },
            }))
            .unwrap();
        target.set_counter(
            CounterId::Service,
            7,
            PacketBytes {
                packets: 3,
                bytes: 180,
            },
        );
        let (_tx, rx) = watch::channel(false);
        let switch = Arc::new(Switch::new(1, target, None, rx).unwrap());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("veth1/statistics")).unwrap();
        std::fs::write(dir.path().join("veth1/statistics/rx_packets"), "17\n").unwrap();
        let text = render(&registry(Metrics {
            switch,
            ports: vec!["1@veth1".parse().unwrap()],
            sysfs_net: dir.path().into(),
            dataplane: None,
        }));
        for line in [
            "# TYPE talaria_switch_drops counter",
            "talaria_switch_drops_total{reason=\"no_service\"} 4",
            "talaria_switch_port_rx_packets_total{port=\"1\",interface=\"veth1\"} 17",
            "talaria_switch_table_entries{table=\"backend\"} 0",
            "talaria_switch_table_entries{table=\"service_v4\"} 1",
            "talaria_switch_table_size{table=\"lb_bucket\"} 2097152",
            "talaria_switch_service_packets_total{service_id=\"7\"} 3",
            "talaria_switch_service_bytes_total{service_id=\"7\"} 180",
            "talaria_switch_p4rt_updates_total{type=\"delete\",result=\"error\"} 0",
            "talaria_switch_pipeline_configured 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // No sysfs file, no sample; no data plane, no pipeline counters.
        assert!(!text.contains("port_tx_packets_total{"), "{text}");
        assert!(!text.contains("pipeline_port_rx"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
