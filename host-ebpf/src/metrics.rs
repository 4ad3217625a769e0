//! The node's Prometheus metrics (prefix `talaria_node`): a
//! prometheus-client [`Collector`] that reads the data path's per-CPU
//! counter maps on every scrape, next to the gauges the agent samples, and
//! a minimal `/metrics` HTTP endpoint.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::node::Stats;
use talaria_common::maps::mtu_stat;

/// Metric name prefix.
pub const PREFIX: &str = "talaria_node";

/// Gauges the agent samples besides the counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub cookies: usize,
    pub reverse_flows: usize,
    pub pods: usize,
    pub gc_removed_total: u64,
}

/// Reads the counters and gauges on every scrape.
pub struct NodeCollector(Box<dyn Fn() -> (Stats, Gauges) + Send + Sync>);

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

impl NodeCollector {
    /// A collector over `read` (the node's maps, and the agent's gauges).
    pub fn new(read: impl Fn() -> (Stats, Gauges) + Send + Sync + 'static) -> Self {
        Self(Box::new(read))
    }
}

fn counters<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (l, v) in values {
        ConstCounter::new(v).encode(family.encode_family(&[(label, l)])?)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: usize) -> std::fmt::Result {
    let g = ConstGauge::new(v as i64);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let (stats, gauges) = (self.0)();
        // The MTU check: ICMP fragmentation-needed sent is an event, its
        // two drops are drop reasons (node-local, so not in `DropReason`).
        let frag_needed = ("frag_needed", stats.mtu_event(mtu_stat::FRAG_NEEDED));
        counters(
            &mut enc,
            "events",
            "Data-path events of the node TC programs.",
            "event",
            stats.events.iter().copied().chain([frag_needed]),
        )?;
        let mtu_drops = [mtu_stat::TOO_BIG_NO_DF, mtu_stat::TOO_BIG_ICMP]
            .map(|i| (mtu_stat::NAMES[i as usize], stats.mtu_event(i)));
        counters(
            &mut enc,
            "drops",
            "Packets dropped by the node TC programs, by reason.",
            "reason",
            stats
                .drops
                .iter()
                .map(|(r, v)| (r.name(), *v))
                .chain(mtu_drops),
        )?;
        gauge(
            &mut enc,
            "cookie_cache_entries",
            "Flows in the client-side cookie cache.",
            gauges.cookies,
        )?;
        gauge(
            &mut enc,
            "reverse_flow_entries",
            "Flows in the backend-side reverse-flow map.",
            gauges.reverse_flows,
        )?;
        gauge(&mut enc, "pods", "Local pods configured.", gauges.pods)?;
        let gc = ConstCounter::new(gauges.gc_removed_total);
        gc.encode(enc.encode_descriptor(
            "gc_removed",
            "Idle flows removed by the GC loop.",
            None,
            gc.metric_type(),
        )?)
    }
}

/// The registry of the node's metrics.
pub fn registry(collector: NodeCollector) -> Registry {
    let mut r = Registry::with_prefix(PREFIX);
    r.register_collector(Box::new(collector));
    r
}

/// The registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}

/// Serves `render(source())` on every HTTP request to `listener`.
pub async fn serve(listener: TcpListener, source: impl Fn() -> String + Send + Sync + 'static) {
    let source = std::sync::Arc::new(source);
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            // Out of descriptors, most likely: wait rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let body = source();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use talaria_common::drop::DropReason;

    #[test]
    fn renders_prefixed_counters() {
        let stats = Stats {
            events: vec![("encap", 3), ("decap", 1)],
            drops: vec![(DropReason::PodSpoof, 2)],
            mtu: vec![
                ("frag_needed", 4),
                ("too_big_no_df", 1),
                ("too_big_icmp", 0),
            ],
        };
        let gauges = Gauges {
            cookies: 5,
            ..Default::default()
        };
        let text = render(&registry(NodeCollector::new(move || {
            (stats.clone(), gauges)
        })));
        assert!(text.contains("talaria_node_events_total{event=\"encap\"} 3"));
        assert!(text.contains("talaria_node_drops_total{reason=\"pod_spoof\"} 2"));
        assert!(text.contains("talaria_node_cookie_cache_entries 5"));
        assert!(text.contains("talaria_node_events_total{event=\"frag_needed\"} 4"));
        assert!(text.contains("talaria_node_drops_total{reason=\"too_big_no_df\"} 1"));
        assert!(text.contains("talaria_node_drops_total{reason=\"too_big_icmp\"} 0"));
        assert!(
            text.contains("# TYPE talaria_node_events counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
