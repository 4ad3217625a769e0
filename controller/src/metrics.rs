//! Prometheus metrics, all prefixed `talaria_`.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label: switch id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwitchLabel {
    /// Switch id.
    pub switch: String,
}

/// Labels: switch and table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// Switch id.
    pub switch: String,
    /// Table short name.
    pub table: String,
}

/// Labels: kind and reason of a skipped object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabel {
    /// Object kind.
    pub kind: String,
    /// Reason.
    pub reason: String,
}

/// Label: an IP protocol as a Service names it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// `SCTP`, …
    pub protocol: String,
}

/// All controller metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Seconds from a desired-state change to the switch holding it.
    pub sync_seconds: Family<SwitchLabel, Histogram>,
    /// Entries per switch and table (as last written or read).
    pub entries: Family<TableLabel, Gauge>,
    /// Failed updates (per-update errors and whole failed Writes).
    pub write_errors: Family<SwitchLabel, Counter>,
    /// Updates written.
    pub writes: Family<SwitchLabel, Counter>,
    /// Reconnects (sessions started after the first).
    pub reconnects: Family<SwitchLabel, Counter>,
    /// Reconciles (plans computed).
    pub reconciles: Counter,
    /// Reconcile failures.
    pub reconcile_errors: Counter,
    /// Objects or parts skipped by the model, currently.
    pub skipped: Family<SkipLabel, Gauge>,
    /// Service ports refused for their protocol, currently.
    pub unsupported_ports: Family<ProtocolLabel, Gauge>,
    /// Seconds to build the model and plan.
    pub plan_seconds: Histogram,
    /// 1 while this replica holds the leader-election Lease (or runs
    /// without election) and writes to switches, 0 on a standby.
    pub leader: Gauge,
    /// Times this replica took over and adopted the ids in a switch.
    pub takeovers: Counter,
}

fn buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("talaria");
        let sync_seconds =
            Family::<SwitchLabel, Histogram>::new_with_constructor(|| Histogram::new(buckets()));
        let plan_seconds = Histogram::new(buckets());
        let m = Self {
            registry: Registry::default(),
            sync_seconds,
            entries: Family::default(),
            write_errors: Family::default(),
            writes: Family::default(),
            reconnects: Family::default(),
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            skipped: Family::default(),
            unsupported_ports: Family::default(),
            plan_seconds,
            leader: Gauge::default(),
            takeovers: Counter::default(),
        };
        registry.register(
            "sync_latency_seconds",
            "Desired-state change to switch holding it",
            m.sync_seconds.clone(),
        );
        registry.register(
            "table_entries",
            "Entries per switch table",
            m.entries.clone(),
        );
        registry.register(
            "write_errors",
            "Failed P4Runtime updates",
            m.write_errors.clone(),
        );
        registry.register("updates", "P4Runtime updates written", m.writes.clone());
        registry.register(
            "reconnects",
            "P4Runtime sessions re-established",
            m.reconnects.clone(),
        );
        registry.register("reconciles", "Plans computed", m.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "skipped_objects",
            "Objects skipped by the model",
            m.skipped.clone(),
        );
        registry.register(
            "unsupported_service_ports",
            "Service ports refused because the data path lacks their protocol",
            m.unsupported_ports.clone(),
        );
        registry.register("plan_seconds", "Model + plan time", m.plan_seconds.clone());
        registry.register(
            "leader",
            "1 while this replica leads (writes to switches), 0 on a standby",
            m.leader.clone(),
        );
        registry.register(
            "takeovers",
            "Leaderships taken, each adopting the ids in a switch before writing",
            m.takeovers.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_prefix() {
        let m = Metrics::default();
        m.reconnects
            .get_or_create(&SwitchLabel {
                switch: "s1".into(),
            })
            .inc();
        m.sync_seconds
            .get_or_create(&SwitchLabel {
                switch: "s1".into(),
            })
            .observe(0.01);
        let t = m.render();
        assert!(
            t.contains("talaria_reconnects_total{switch=\"s1\"} 1"),
            "{t}"
        );
        assert!(t.contains("talaria_sync_latency_seconds_bucket"), "{t}");
        m.unsupported_ports
            .get_or_create(&ProtocolLabel {
                protocol: "SCTP".into(),
            })
            .set(2);
        let t = m.render();
        assert!(
            t.contains("talaria_unsupported_service_ports{protocol=\"SCTP\"} 2"),
            "{t}"
        );
    }
}
