//! Prometheus text exposition of the node counters, and a minimal
//! `/metrics` HTTP endpoint.

use std::fmt::Write as _;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{abi::mtu_stat, node::Stats};

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

/// Renders the counters in the Prometheus text format.
pub fn render(stats: &Stats, gauges: &Gauges) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP {PREFIX}_events_total Data-path events of the node TC programs."
    );
    let _ = writeln!(out, "# TYPE {PREFIX}_events_total counter");
    for (name, v) in &stats.events {
        let _ = writeln!(out, "{PREFIX}_events_total{{event=\"{name}\"}} {v}");
    }
    // The MTU check: ICMP fragmentation-needed sent is an event, its two
    // drops are drop reasons (node-local, so not in `DropReason`).
    let frag_needed = stats.mtu_event(mtu_stat::FRAG_NEEDED);
    let _ = writeln!(
        out,
        "{PREFIX}_events_total{{event=\"frag_needed\"}} {frag_needed}"
    );
    let _ = writeln!(
        out,
        "# HELP {PREFIX}_drops_total Packets dropped by the node TC programs, by reason."
    );
    let _ = writeln!(out, "# TYPE {PREFIX}_drops_total counter");
    for (r, v) in &stats.drops {
        let _ = writeln!(out, "{PREFIX}_drops_total{{reason=\"{}\"}} {v}", r.name());
    }
    for idx in [mtu_stat::TOO_BIG_NO_DF, mtu_stat::TOO_BIG_ICMP] {
        let _ = writeln!(
            out,
            "{PREFIX}_drops_total{{reason=\"{}\"}} {}",
            mtu_stat::NAMES[idx as usize],
            stats.mtu_event(idx)
        );
    }
    for (name, help, v) in [
        (
            "cookie_cache_entries",
            "Flows in the client-side cookie cache.",
            gauges.cookies as u64,
        ),
        (
            "reverse_flow_entries",
            "Flows in the backend-side reverse-flow map.",
            gauges.reverse_flows as u64,
        ),
        ("pods", "Local pods configured.", gauges.pods as u64),
    ] {
        let _ = writeln!(
            out,
            "# HELP {PREFIX}_{name} {help}\n# TYPE {PREFIX}_{name} gauge\n{PREFIX}_{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP {PREFIX}_gc_removed_total Idle flows removed by the GC loop.\n# TYPE {PREFIX}_gc_removed_total counter\n{PREFIX}_gc_removed_total {}",
        gauges.gc_removed_total
    );
    out
}

/// Serves `render(source())` on every HTTP request to `listener`.
pub async fn serve(listener: TcpListener, source: impl Fn() -> String + Send + Sync + 'static) {
    let source = std::sync::Arc::new(source);
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let body = source();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
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
        let text = render(
            &stats,
            &Gauges {
                cookies: 5,
                ..Default::default()
            },
        );
        assert!(text.contains("talaria_node_events_total{event=\"encap\"} 3"));
        assert!(text.contains("talaria_node_drops_total{reason=\"pod_spoof\"} 2"));
        assert!(text.contains("talaria_node_cookie_cache_entries 5"));
        assert!(text.contains("talaria_node_events_total{event=\"frag_needed\"} 4"));
        assert!(text.contains("talaria_node_drops_total{reason=\"too_big_no_df\"} 1"));
        assert!(text.contains("talaria_node_drops_total{reason=\"too_big_icmp\"} 0"));
    }
}
