//! Audit sink health as Prometheus metrics: whether each sink is up, its failures by reason,
//! records delivered, and how many bytes wait in its buffer. `sink` is the sink's index in the
//! tenant's spec and `type` its kind: a fixed, small label set.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct AuditMetrics {
    up: IntGaugeVec,
    failures: IntCounterVec,
    delivered: IntCounterVec,
    buffered: IntGaugeVec,
}

/// One sink's handles into [`AuditMetrics`].
#[derive(Debug, Clone)]
pub struct SinkHealth {
    metrics: AuditMetrics,
    sink: String,
    kind: &'static str,
}

/// Why a delivery failed: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFailure {
    Unreachable,
    /// The sink refused the node's credentials (HTTP 401/403).
    Unauthorized,
    /// The sink answered with an error status.
    Rejected,
    /// The connection broke while sending.
    Broken,
}

impl SinkFailure {
    fn label(self) -> &'static str {
        match self {
            SinkFailure::Unreachable => "unreachable",
            SinkFailure::Unauthorized => "unauthorized",
            SinkFailure::Rejected => "rejected",
            SinkFailure::Broken => "broken",
        }
    }
}

impl AuditMetrics {
    pub fn new(registry: &Registry, tenant: &str, node: &str) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("tenant", tenant)
                .const_label("node", node)
        };
        let up = IntGaugeVec::new(
            opts(
                "bedside_audit_sink_up",
                "1 when the audit sink took the last delivery",
            ),
            &["sink", "type"],
        )?;
        let failures = IntCounterVec::new(
            opts(
                "bedside_audit_sink_failures_total",
                "Failed deliveries to an audit sink, by reason (unreachable, unauthorized, rejected, broken)",
            ),
            &["sink", "type", "reason"],
        )?;
        let delivered = IntCounterVec::new(
            opts(
                "bedside_audit_records_delivered_total",
                "Audit records handed to a sink",
            ),
            &["sink", "type"],
        )?;
        let buffered = IntGaugeVec::new(
            opts(
                "bedside_audit_buffer_bytes",
                "Audit record bytes waiting in a sink's disk buffer",
            ),
            &["sink", "type"],
        )?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(delivered.clone()))?;
        registry.register(Box::new(buffered.clone()))?;
        Ok(Self {
            up,
            failures,
            delivered,
            buffered,
        })
    }

    pub fn sink(&self, index: usize, kind: &'static str) -> SinkHealth {
        let sink = index.to_string();
        // Present from the start: an alert sees a down sink, not a missing series.
        self.up.with_label_values(&[&sink, kind]).set(0);
        self.delivered.with_label_values(&[&sink, kind]);
        self.buffered.with_label_values(&[&sink, kind]).set(0);
        for reason in [
            SinkFailure::Unreachable,
            SinkFailure::Unauthorized,
            SinkFailure::Rejected,
            SinkFailure::Broken,
        ] {
            self.failures
                .with_label_values(&[&sink, kind, reason.label()]);
        }
        SinkHealth {
            metrics: self.clone(),
            sink,
            kind,
        }
    }

    pub fn metric_names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 4] =
            [&self.up, &self.failures, &self.delivered, &self.buffered];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }
}

impl SinkHealth {
    /// Returns whether the sink was up before (so callers log transitions once).
    pub fn set_up(&self, up: bool) -> bool {
        let gauge = self.metrics.up.with_label_values(&[&self.sink, self.kind]);
        let was = gauge.get() == 1;
        gauge.set(i64::from(up));
        was
    }

    pub fn failed(&self, reason: SinkFailure) {
        self.metrics
            .failures
            .with_label_values(&[&self.sink, self.kind, reason.label()])
            .inc();
    }

    pub fn delivered(&self, records: u64) {
        self.metrics
            .delivered
            .with_label_values(&[&self.sink, self.kind])
            .inc_by(records);
    }

    pub fn buffered(&self, bytes: u64) {
        self.metrics
            .buffered
            .with_label_values(&[&self.sink, self.kind])
            .set(bytes as i64);
    }
}
