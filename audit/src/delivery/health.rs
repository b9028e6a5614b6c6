//! Audit sink health as Prometheus metrics: whether each sink is up, its failures by reason,
//! records delivered, and how many bytes wait in its buffer. `sink` is the sink's index in the
//! tenant's spec and `type` its kind: a fixed, small label set.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone)]
pub struct AuditMetrics {
    up: IntGaugeVec,
    failures: IntCounterVec,
    delivered: IntCounterVec,
    buffered: IntGaugeVec,
    /// Every sink's state, for the health report the operator reads.
    states: Arc<Mutex<Vec<SinkReport>>>,
    buffer_full: IntGauge,
    refusing_joins: IntGauge,
}

pub use crate::evidence::{AuditHealthReport, SinkReport, SinkState};

/// A sink going down or coming back: an audit event of its own (sink failure / recovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTransition {
    pub sink: usize,
    pub kind: &'static str,
    /// `None` when the sink recovered.
    pub failure: Option<SinkFailure>,
}

/// One sink's handles into [`AuditMetrics`].
#[derive(Debug, Clone)]
pub struct SinkHealth {
    metrics: AuditMetrics,
    index: usize,
    sink: String,
    kind: &'static str,
    transitions: Option<UnboundedSender<SinkTransition>>,
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
    /// A line in the buffer is not a record (a write cut short): it was set aside in the
    /// buffer's `.set-aside` file, so the records after it are delivered.
    SetAside,
}

impl SinkFailure {
    pub fn label(self) -> &'static str {
        match self {
            SinkFailure::Unreachable => "unreachable",
            SinkFailure::Unauthorized => "unauthorized",
            SinkFailure::Rejected => "rejected",
            SinkFailure::Broken => "broken",
            SinkFailure::SetAside => "set-aside",
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
        let buffer_full = IntGauge::with_opts(opts(
            "bedside_audit_buffer_full",
            "1 when some audit sink's buffer is past its size (the tenant's whenBufferFull policy applies)",
        ))?;
        let refusing_joins = IntGauge::with_opts(opts(
            "bedside_audit_refusing_joins",
            "1 while the node refuses joins because audit records cannot be delivered",
        ))?;
        registry.register(Box::new(buffer_full.clone()))?;
        registry.register(Box::new(refusing_joins.clone()))?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(delivered.clone()))?;
        registry.register(Box::new(buffered.clone()))?;
        Ok(Self {
            up,
            failures,
            delivered,
            buffered,
            states: Arc::default(),
            buffer_full,
            refusing_joins,
        })
    }

    pub fn set_buffer_full(&self, full: bool, refusing: bool) {
        self.buffer_full.set(i64::from(full));
        self.refusing_joins.set(i64::from(refusing));
    }

    /// The live undelivered bytes of each sink, in the order `sink` registered them (the
    /// order `delivery::start` opens their buffers: [`super::Auditor::depths`]).
    pub fn set_depths(&self, depths: &[u64]) {
        let Ok(mut states) = self.states.lock() else {
            return;
        };
        for (report, bytes) in states.iter_mut().zip(depths) {
            report.buffered_bytes = *bytes;
            self.buffered
                .with_label_values(&[report.sink.to_string().as_str(), &report.kind])
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
    }

    /// Every network sink's state, in spec order.
    pub fn report(&self) -> Vec<SinkReport> {
        self.states.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Handles for sink `index`; its ups and downs are sent to `transitions`.
    pub fn sink(
        &self,
        index: usize,
        kind: &'static str,
        transitions: Option<UnboundedSender<SinkTransition>>,
    ) -> SinkHealth {
        let sink = index.to_string();
        if let Ok(mut states) = self.states.lock() {
            states.push(SinkReport {
                sink: index,
                kind: Cow::Borrowed(kind),
                state: SinkState::Unknown,
                reason: None,
                buffered_bytes: 0,
            });
        }
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
            index,
            sink,
            kind,
            transitions,
        }
    }

    pub fn metric_names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 6] = [
            &self.up,
            &self.failures,
            &self.delivered,
            &self.buffered,
            &self.buffer_full,
            &self.refusing_joins,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }
}

impl SinkHealth {
    /// Moves the sink to `state`; returns whether that changed it, so callers log once.
    fn set(&self, state: SinkState, reason: Option<SinkFailure>) -> bool {
        self.metrics
            .up
            .with_label_values(&[&self.sink, self.kind])
            .set(i64::from(state == SinkState::Up));
        let Ok(mut states) = self.metrics.states.lock() else {
            return false;
        };
        let Some(report) = states.iter_mut().find(|r| r.sink == self.index) else {
            return false;
        };
        let (was, was_reason) = (report.state, report.reason.clone());
        report.state = state;
        report.reason = reason.map(|r| Cow::Borrowed(r.label()));
        if was == state && was_reason == report.reason {
            return false;
        }
        // A first success is not a recovery; a failure, or a new reason for one, is recorded.
        let event = match (was, state) {
            (_, SinkState::Down) => Some(reason),
            (SinkState::Down, SinkState::Up) => Some(None),
            _ => None,
        };
        if let (Some(failure), Some(tx)) = (event, &self.transitions) {
            let _ = tx.send(SinkTransition {
                sink: self.index,
                kind: self.kind,
                failure,
            });
        }
        true
    }

    /// A line that is not a record was set aside: counted, and sealed as a record of its own,
    /// while the sink's state stays as it is.
    pub fn set_aside(&self) {
        self.metrics
            .failures
            .with_label_values(&[&self.sink, self.kind, SinkFailure::SetAside.label()])
            .inc();
        if let Some(tx) = &self.transitions {
            let _ = tx.send(SinkTransition {
                sink: self.index,
                kind: self.kind,
                failure: Some(SinkFailure::SetAside),
            });
        }
    }

    /// A delivery went through; returns whether the sink was not up before.
    pub fn up(&self) -> bool {
        self.set(SinkState::Up, None)
    }

    /// A delivery failed; returns whether the sink was not down before.
    pub fn down(&self, reason: SinkFailure) -> bool {
        self.metrics
            .failures
            .with_label_values(&[&self.sink, self.kind, reason.label()])
            .inc();
        self.set(SinkState::Down, Some(reason))
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
        if let Ok(mut states) = self.metrics.states.lock()
            && let Some(report) = states.iter_mut().find(|r| r.sink == self.index)
        {
            report.buffered_bytes = bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_a_node_serves_is_the_one_the_operator_reads() {
        let metrics = AuditMetrics::new(&Registry::new(), "t", "n").expect("metrics");
        let sink = metrics.sink(1, "syslog", None);
        sink.down(SinkFailure::Unreachable);
        sink.buffered(4096);
        let served = AuditHealthReport {
            sinks: metrics.report(),
            buffer_full: false,
            refusing_joins: false,
            when_buffer_full: crate::event::BufferFullPolicy::KeepServing,
        };
        let wire = serde_json::to_value(&served).expect("json");
        assert_eq!(
            wire,
            serde_json::json!({"sinks": [{"sink": 1, "type": "syslog", "state": "down",
                "reason": "unreachable", "bufferedBytes": 4096}],
                "bufferFull": false, "refusingJoins": false, "whenBufferFull": "KeepServing"})
        );
        let read: AuditHealthReport = serde_json::from_value(wire).expect("read back");
        assert_eq!(read, served);
        // An older node's report, without the newer fields, still reads.
        let older: AuditHealthReport =
            serde_json::from_str(r#"{"sinks":[{"sink":0,"type":"webhook","state":"up"}]}"#)
                .expect("an older report");
        assert_eq!(older.sinks[0].state, SinkState::Up);
    }

    #[test]
    fn failures_and_recoveries_are_reported_once_each() {
        let metrics = AuditMetrics::new(&Registry::new(), "t", "n").expect("metrics");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = metrics.sink(1, "syslog", Some(tx));
        assert!(sink.up(), "unknown to up is a change");
        assert!(!sink.up());
        assert!(sink.down(SinkFailure::Unreachable));
        assert!(
            !sink.down(SinkFailure::Unreachable),
            "still down: no new event"
        );
        assert!(sink.down(SinkFailure::Broken), "a new reason is news");
        assert!(sink.up());
        let mut seen = Vec::new();
        while let Ok(t) = rx.try_recv() {
            seen.push(t.failure);
        }
        // The first success is not a recovery: only the failure and the recovery.
        assert_eq!(
            seen,
            [
                Some(SinkFailure::Unreachable),
                Some(SinkFailure::Broken),
                None
            ]
        );
        sink.down(SinkFailure::Unauthorized);
        sink.buffered(42);
        let report = metrics.report();
        assert_eq!(report[0].state, SinkState::Down);
        assert_eq!(
            (report[0].reason.as_deref(), report[0].buffered_bytes),
            (Some("unauthorized"), 42)
        );
    }
}
