//! The operator's Prometheus metrics. Labels are fixed words and tenant names only: no
//! participant, no secret, no free text.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_seconds: HistogramVec,
    pub errors: IntCounterVec,
    pub drift_reverted: IntCounterVec,
    pub tenant_condition: IntGaugeVec,
    pub baa_expiry: IntGaugeVec,
    pub children_checks: IntCounterVec,
    pub break_glass_active: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("bedside_operator_reconciles_total", "Reconciles, by result"),
            &["result"],
        )
        .expect("valid metric");
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new(
                "bedside_operator_reconcile_duration_seconds",
                "Time per reconcile",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &[],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "bedside_operator_reconcile_errors_total",
                "Failed reconciles, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let drift_reverted = IntCounterVec::new(
            Opts::new(
                "bedside_operator_drift_reverted_total",
                "Edits of owned objects reverted, by object kind and whether a lock was weakened",
            ),
            &["kind", "weakened_lock"],
        )
        .expect("valid metric");
        let tenant_condition = IntGaugeVec::new(
            Opts::new(
                "bedside_operator_tenant_condition",
                "1 for each tenant's current status of each condition",
            ),
            &["namespace", "tenant", "condition", "status"],
        )
        .expect("valid metric");
        let baa_expiry = IntGaugeVec::new(
            Opts::new(
                "bedside_operator_baa_expiry_timestamp_seconds",
                "When each tenant's Business Associate Agreement stops being in force (alert on it minus time())",
            ),
            &["namespace", "tenant"],
        )
        .expect("valid metric");
        let children_checks = IntCounterVec::new(
            Opts::new(
                "bedside_operator_children_checks_total",
                "Checks of a tenant's children, by where they were read: the watch caches (no API request) or the API server",
            ),
            &["source"],
        )
        .expect("valid metric");
        let break_glass_active = IntGaugeVec::new(
            Opts::new(
                "bedside_break_glass_active",
                "1 for each BreakGlass whose emergency link works now (alert while it is)",
            ),
            &["namespace", "tenant", "break_glass"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_seconds.clone()),
            Box::new(errors.clone()),
            Box::new(drift_reverted.clone()),
            Box::new(tenant_condition.clone()),
            Box::new(baa_expiry.clone()),
            Box::new(children_checks.clone()),
            Box::new(break_glass_active.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            registry,
            reconciles,
            reconcile_seconds,
            errors,
            drift_reverted,
            tenant_condition,
            baa_expiry,
            children_checks,
            break_glass_active,
        }
    }

    /// Every metric name the operator exports, with or without samples yet.
    pub fn metric_names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 8] = [
            &self.reconciles,
            &self.reconcile_seconds,
            &self.errors,
            &self.drift_reverted,
            &self.tenant_condition,
            &self.baa_expiry,
            &self.children_checks,
            &self.break_glass_active,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }

    /// The text exposition format for /metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}
