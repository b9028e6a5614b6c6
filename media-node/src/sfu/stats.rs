//! Counters the media loop keeps; exported as Prometheus metrics labelled by tenant and node
//! only, never by participant or room (room names come from scheduling systems).

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

/// Delay buckets fine enough to tell a 1 ms p99 goal apart.
const DELAY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1,
];
const JOIN_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0];

/// A histogram of durations.
#[derive(Debug, Clone)]
pub struct DurationHistogram(Histogram);

impl DurationHistogram {
    pub fn record(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }

    pub fn inner(&self) -> &Histogram {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct EngineStats {
    pub participants: IntGauge,
    pub connected: IntCounter,
    pub media_refused: IntCounter,
    pub datagrams_in: IntCounter,
    pub datagrams_out: IntCounter,
    pub send_dropped: IntCounter,
    pub frames_forwarded: IntCounter,
    /// From a frame's arrival at the node to its hand-off to every subscriber's sender.
    pub forward_delay: DurationHistogram,
    /// From join to the media path being up.
    pub join_to_media: DurationHistogram,
}

impl EngineStats {
    pub fn new(registry: &Registry, tenant: &str, node: &str) -> Result<Self, prometheus::Error> {
        let labelled = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("tenant", tenant)
                .const_label("node", node)
        };
        let histogram =
            |name: &str, help: &str, buckets: &[f64]| -> Result<Histogram, prometheus::Error> {
                let h = Histogram::with_opts(
                    HistogramOpts::new(name, help)
                        .const_label("tenant", tenant)
                        .const_label("node", node)
                        .buckets(buckets.to_vec()),
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::with_opts(labelled(name, help))?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let participants = IntGauge::with_opts(labelled(
            "bedside_media_participants",
            "Participants joined to this node",
        ))?;
        registry.register(Box::new(participants.clone()))?;
        Ok(Self {
            participants,
            connected: counter(
                "bedside_media_connections_total",
                "Media connections that completed DTLS under the encryption policy",
            )?,
            media_refused: counter(
                "bedside_media_encryption_refused_total",
                "Media connections refused by the encryption policy",
            )?,
            datagrams_in: counter(
                "bedside_media_datagrams_received_total",
                "UDP datagrams received",
            )?,
            datagrams_out: counter("bedside_media_datagrams_sent_total", "UDP datagrams sent")?,
            send_dropped: counter(
                "bedside_media_send_dropped_total",
                "Datagrams dropped because the socket buffer was full",
            )?,
            frames_forwarded: counter(
                "bedside_media_frames_forwarded_total",
                "Media frames handed to subscribers",
            )?,
            forward_delay: DurationHistogram(histogram(
                "bedside_media_forward_delay_seconds",
                "Time from a frame's arrival at the node to its hand-off to subscribers",
                DELAY_BUCKETS,
            )?),
            join_to_media: DurationHistogram(histogram(
                "bedside_media_join_to_connected_seconds",
                "Time from a participant's join to its encrypted media path being up",
                JOIN_BUCKETS,
            )?),
        })
    }
}
