//! The node's Prometheus metrics. Labels are `tenant` and `node` (constant per node) and, where a
//! metric says so, a small fixed set like `direction`, `kind` or `reason`: never a participant,
//! a room name or a user, so nothing identifies a patient and cardinality stays flat.

use std::time::Duration;

use str0m::media::MediaKind;

use super::participant::Forward;
use super::recovery::Reset;
use crate::protocol::MediaPath;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Delay buckets fine enough to tell a 1 ms p99 goal apart.
const DELAY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1,
];
const JOIN_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Picture heights browsers decode: phone-small to 4K.
const HEIGHT_BUCKETS: &[f64] = &[180.0, 270.0, 360.0, 540.0, 720.0, 1080.0, 2160.0];
const FPS_BUCKETS: &[f64] = &[5.0, 10.0, 15.0, 20.0, 24.0, 30.0, 60.0];
const SEND_ESTIMATE_BUCKETS: &[f64] = &[150e3, 300e3, 500e3, 1e6, 1.5e6, 2.5e6, 5e6, 10e6];
const PLACEMENT_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
    3.0,
];
const RTT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
];
const JITTER_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];
const LOSS_BUCKETS: &[f64] = &[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// Why a join was refused: the `reason` label of `bedside_media_joins_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    TokenExpired,
    /// A visit's link used before its window opens.
    TokenNotOpenYet,
    TokenWrongTenant,
    TokenWrongRoom,
    TokenForged,
    TokenNotPseudonymous,
    TokenInvalid,
    RoomFull,
    NotAvailable,
    /// An audit sink's buffer is over its limit: no unaudited visits.
    AuditUnavailable,
    /// A missing or wrong passcode, or a client cooling down after too many.
    Passcode,
    /// A link of a visit the clinic cancelled.
    VisitCancelled,
    /// A link of an older issue, after the visit's links were reissued.
    LinkReplaced,
    /// Too many join attempts from the client's network: refused before the token is read.
    RateLimited,
    /// The client's network holds its share of signaling connections already.
    NetworkConnections,
    /// The node holds as many signaling connections as it takes.
    NodeConnections,
    /// An emergency link whose BreakGlass is not active (expired, revoked, unapproved), or
    /// used by someone else or for another visit.
    BreakGlassInactive,
}

/// A connection the client limits refused, as the refusals metric names it.
impl From<crate::limits::ConnectionRefusal> for JoinRefusal {
    fn from(refusal: crate::limits::ConnectionRefusal) -> Self {
        match refusal {
            crate::limits::ConnectionRefusal::NetworkFull => JoinRefusal::NetworkConnections,
            crate::limits::ConnectionRefusal::NodeFull => JoinRefusal::NodeConnections,
        }
    }
}

impl JoinRefusal {
    pub const ALL: [JoinRefusal; 17] = [
        JoinRefusal::TokenExpired,
        JoinRefusal::TokenNotOpenYet,
        JoinRefusal::TokenWrongTenant,
        JoinRefusal::TokenWrongRoom,
        JoinRefusal::TokenForged,
        JoinRefusal::TokenNotPseudonymous,
        JoinRefusal::TokenInvalid,
        JoinRefusal::RoomFull,
        JoinRefusal::NotAvailable,
        JoinRefusal::AuditUnavailable,
        JoinRefusal::Passcode,
        JoinRefusal::VisitCancelled,
        JoinRefusal::LinkReplaced,
        JoinRefusal::RateLimited,
        JoinRefusal::NetworkConnections,
        JoinRefusal::NodeConnections,
        JoinRefusal::BreakGlassInactive,
    ];

    /// The reason in the metric's label and in audit records (the same words, kebab case).
    fn names(self) -> (&'static str, &'static str) {
        match self {
            JoinRefusal::Passcode => ("passcode", "passcode"),
            JoinRefusal::TokenExpired => ("token_expired", "token-expired"),
            JoinRefusal::TokenNotOpenYet => ("token_not_open_yet", "token-not-open-yet"),
            JoinRefusal::TokenWrongTenant => ("token_wrong_tenant", "token-wrong-tenant"),
            JoinRefusal::TokenWrongRoom => ("token_wrong_room", "token-wrong-room"),
            JoinRefusal::TokenForged => ("token_forged", "token-forged"),
            JoinRefusal::TokenNotPseudonymous => {
                ("token_not_pseudonymous", "token-not-pseudonymous")
            }
            JoinRefusal::TokenInvalid => ("token_invalid", "token-invalid"),
            JoinRefusal::VisitCancelled => ("visit_cancelled", "visit-cancelled"),
            JoinRefusal::LinkReplaced => ("link_replaced", "link-replaced"),
            JoinRefusal::RoomFull => ("room_full", "room-full"),
            JoinRefusal::NotAvailable => ("not_available", "not-available"),
            JoinRefusal::AuditUnavailable => ("audit_unavailable", "audit-unavailable"),
            JoinRefusal::RateLimited => ("rate_limited", "rate-limited"),
            JoinRefusal::NetworkConnections => ("network_connections", "network-connections"),
            JoinRefusal::NodeConnections => ("node_connections", "node-connections"),
            JoinRefusal::BreakGlassInactive => ("break_glass_inactive", "break-glass-inactive"),
        }
    }

    /// The reason in audit records.
    pub fn code(self) -> &'static str {
        self.names().1
    }

    pub fn label(self) -> &'static str {
        self.names().0
    }
}

/// Why a media connection failed: the `reason` label of
/// `bedside_media_connection_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionFailure {
    /// DTLS could not agree on ECDHE + AES-GCM and AEAD_AES_256_GCM.
    EncryptionPolicy,
    /// ICE never connected or timed out.
    Ice,
    /// Anything else str0m reported.
    Other,
}

impl ConnectionFailure {
    pub fn label(self) -> &'static str {
        match self {
            ConnectionFailure::EncryptionPolicy => "encryption_policy",
            ConnectionFailure::Ice => "ice",
            ConnectionFailure::Other => "other",
        }
    }
}

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

/// What one media loop holds, for the node's gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomCounts {
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
}

#[derive(Debug, Clone)]
pub struct EngineStats {
    pub rooms: IntGauge,
    pub participants: IntGauge,
    pub publishers: IntGauge,
    pub subscribers: IntGauge,
    pub connected: IntCounter,
    /// Joins this pod carried on to the pod that holds their room.
    pub forwarded_joins: IntCounter,
    /// Signaling connections this pod carries to other pods now: a draining pod keeps them.
    pub relayed: IntGauge,
    /// Signaling connections open now (joined or not).
    pub signaling_connections: IntGauge,
    /// Completed media sessions by negotiated SRTP profile.
    pub srtp_sessions: IntCounterVec,
    /// Completed media sessions by the path their media takes (udp, tcp).
    pub sessions_by_path: IntCounterVec,
    /// ICE-TCP connections open now.
    pub ice_tcp_connections: IntGauge,
    /// ICE restarts browsers asked for: a network that changed or dropped under a call.
    pub ice_restarts: IntCounter,
    /// Pre-call connectivity checks the node answered (each is one path a browser tries).
    pub connection_checks: IntCounter,
    pub connection_failures: IntCounterVec,
    pub joins_refused: IntCounterVec,
    pub bytes: IntCounterVec,
    pub packets: IntCounterVec,
    /// The hot-path children of `bytes` and `packets`, resolved once.
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    /// The part of those bytes that went through the tenant's TURN relay.
    pub relayed_bytes_in: IntCounter,
    pub relayed_bytes_out: IntCounter,
    relayed_bytes: IntCounterVec,
    pub packets_in: IntCounter,
    pub packets_out: IntCounter,
    pub send_dropped: IntCounter,
    /// Datagrams the kernel cut from one buffer (UDP segmentation offload).
    pub send_segmented: IntCounter,
    /// Datagrams dropped because the media loop they belong to had a full queue.
    pub receive_dropped: IntCounter,
    /// Media loops the node runs (one per core it may use).
    pub loops: IntGauge,
    pub packets_forwarded: IntCounter,
    /// Chat messages relayed to a participant (counts only; never content).
    pub chat_messages: IntCounter,
    /// Chat messages not relayed: too long, too fast, not text.
    pub chat_refused: IntCounter,
    /// Chat messages a receiver's data channel had no room for.
    pub chat_dropped: IntCounter,
    /// NACK, PLI and FIR the node received from subscribers or sent to publishers.
    pub feedback: IntCounterVec,
    pub layer_switches: IntCounter,
    /// Keyframes asked of publishers because a subscriber's link began or stopped losing more
    /// than retransmission repairs (`congestion::Restart`).
    pub keyframes_for_loss: IntCounter,
    /// Times a subscriber's video was held back because its send queue was too deep.
    pub send_queue_holds: IntCounter,
    /// Times a subscriber's collapsed estimate was measured again (`recovery.rs`), and times
    /// the link then showed the collapse was real.
    pub estimate_restarts: IntCounter,
    pub estimate_restarts_undone: IntCounter,
    /// Times a subscriber's estimate sank under what its lowest layers need while its link
    /// lost nothing, and was lifted to that floor (`recovery.rs`).
    pub estimate_floors: IntCounter,
    /// Times a subscriber's estimate stopped growing under what a move up needs while its
    /// link lost nothing, and was measured again (`recovery.rs`).
    pub estimate_reprobes: IntCounter,
    /// Times a subscriber's video waited in its send queue under an estimate below what its
    /// layers carry while its link lost nothing, and the estimate was lifted (`recovery.rs`).
    pub estimate_lifts: IntCounter,
    /// Times a subscriber waiting for a move up on a link that lost nothing had its link
    /// probed for it (`recovery.rs`, `Recovery::probe_up`).
    pub probes_for_move_up: IntCounter,
    /// What browsers report of the video they decode (docs/signaling.md#quality-reports).
    pub received_height: Histogram,
    pub received_fps: Histogram,
    pub freezes: IntCounter,
    pub send_estimate: Histogram,
    pub quality_reports: IntCounter,
    pub rtt: Histogram,
    pub jitter: HistogramVec,
    pub loss: HistogramVec,
    /// From a frame's arrival at the node to its encrypted datagrams for every subscriber handed
    /// to the socket (measured by the shell: the engine has no clock).
    pub forward_delay: DurationHistogram,
    /// From the token check to the first media frame sent or received.
    pub join_to_media: DurationHistogram,
    /// What placing a join costs: finding (or choosing) the room's pod through the Leases, and
    /// for a join carried on, the connection to that pod.
    pub placement: DurationHistogram,
    /// Each media loop beats on every turn; the liveness probe reads the oldest beat.
    pub heartbeat: std::sync::Arc<crate::health::Heartbeat>,
}

impl EngineStats {
    /// A browser's quality report, checked: numbers into histograms, nothing that names anyone.
    pub fn record_quality(&self, report: &crate::protocol::QualityReport) {
        self.quality_reports.inc();
        for video in &report.video {
            self.received_height.observe(f64::from(video.height));
            self.received_fps.observe(f64::from(video.fps));
        }
        self.freezes.inc_by(u64::from(report.freezes));
        if let Some(bps) = report.send_estimate_bps {
            self.send_estimate.observe(bps as f64);
        }
    }

    pub fn new(registry: &Registry, tenant: &str, node: &str) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("tenant", tenant)
                .const_label("node", node)
        };
        let hopts = |name: &str, help: &str, buckets: &[f64]| {
            HistogramOpts::new(name, help)
                .const_label("tenant", tenant)
                .const_label("node", node)
                .buckets(buckets.to_vec())
        };
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            c: C,
        ) -> Result<C, prometheus::Error> {
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let gauge = |name: &str, help: &str| reg(registry, IntGauge::with_opts(opts(name, help))?);
        let counter =
            |name: &str, help: &str| reg(registry, IntCounter::with_opts(opts(name, help))?);
        let counter_vec = |name: &str, help: &str, label: &str| {
            reg(registry, IntCounterVec::new(opts(name, help), &[label])?)
        };

        let bytes = counter_vec(
            "bedside_media_bytes_total",
            "UDP payload bytes, by direction (received, sent)",
            "direction",
        )?;
        let packets = counter_vec(
            "bedside_media_packets_total",
            "UDP datagrams, by direction (received, sent)",
            "direction",
        )?;
        let relayed_bytes = counter_vec(
            "bedside_media_relayed_bytes_total",
            "UDP payload bytes of sessions through the tenant's TURN relay, by direction (received, sent)",
            "direction",
        )?;
        let stats = Self {
            relayed_bytes_in: relayed_bytes.with_label_values(&["received"]),
            relayed_bytes_out: relayed_bytes.with_label_values(&["sent"]),
            relayed_bytes,
            bytes_in: bytes.with_label_values(&["received"]),
            bytes_out: bytes.with_label_values(&["sent"]),
            packets_in: packets.with_label_values(&["received"]),
            packets_out: packets.with_label_values(&["sent"]),
            bytes,
            packets,
            rooms: gauge("bedside_media_rooms", "Rooms with at least one participant")?,
            participants: gauge(
                "bedside_media_participants",
                "Participants joined to this node",
            )?,
            publishers: gauge("bedside_media_publishers", "Participants sending media")?,
            subscribers: gauge(
                "bedside_media_subscribers",
                "Participants receiving forwarded video",
            )?,
            forwarded_joins: counter(
                "bedside_media_joins_forwarded_total",
                "Joins carried on to the pod that holds their room",
            )?,
            relayed: gauge(
                "bedside_media_relayed_connections",
                "Signaling connections this pod carries to the pods that hold their rooms",
            )?,
            signaling_connections: gauge(
                "bedside_media_signaling_connections",
                "Signaling connections open now, joined or not",
            )?,
            connected: counter(
                "bedside_media_connections_total",
                "Media connections that completed DTLS under the encryption policy",
            )?,
            srtp_sessions: counter_vec(
                "bedside_media_srtp_sessions_total",
                "Completed media sessions by negotiated SRTP protection profile",
                "profile",
            )?,
            sessions_by_path: counter_vec(
                "bedside_media_sessions_by_path_total",
                "Completed media sessions by the path their media takes: udp, tcp (ICE-TCP, from networks that block UDP), or relay (the tenant's TURN relay)",
                "path",
            )?,
            ice_tcp_connections: gauge(
                "bedside_media_ice_tcp_connections",
                "ICE-TCP connections open now",
            )?,
            ice_restarts: counter(
                "bedside_media_ice_restarts_total",
                "ICE restarts browsers asked for after their network changed or dropped (the call went on)",
            )?,
            connection_checks: counter(
                "bedside_media_connection_checks_total",
                "Pre-call connectivity checks answered, one per path a browser tried (UDP, TCP, relay)",
            )?,
            connection_failures: counter_vec(
                "bedside_media_connection_failures_total",
                "Media connections that failed, by reason (encryption_policy, ice, other)",
                "reason",
            )?,
            joins_refused: counter_vec(
                "bedside_media_joins_refused_total",
                "Joins refused, by reason",
                "reason",
            )?,
            send_dropped: counter(
                "bedside_media_send_dropped_total",
                "Datagrams dropped because the socket buffer was full",
            )?,
            send_segmented: counter(
                "bedside_media_send_segmented_total",
                "Datagrams sent in runs to one subscriber that the kernel cut from one buffer (UDP segmentation offload)",
            )?,
            receive_dropped: counter(
                "bedside_media_receive_dropped_total",
                "Datagrams dropped because their media loop was behind (its queue was full)",
            )?,
            loops: gauge(
                "bedside_media_loops",
                "Media loops this node runs, one per core it may use; rooms are spread over them",
            )?,
            packets_forwarded: counter(
                "bedside_media_packets_forwarded_total",
                "Media (RTP) packets handed to subscribers",
            )?,
            chat_messages: counter(
                "bedside_media_chat_messages_total",
                "Chat messages relayed to participants (content is never stored)",
            )?,
            chat_refused: counter(
                "bedside_media_chat_refused_total",
                "Chat messages refused: too long, too fast or not text",
            )?,
            chat_dropped: counter(
                "bedside_media_chat_dropped_total",
                "Chat messages a receiver's data channel had no room for",
            )?,
            feedback: counter_vec(
                "bedside_media_feedback_total",
                "RTCP feedback the node received from receivers (nack, pli, fir)",
                "kind",
            )?,
            layer_switches: counter(
                "bedside_media_simulcast_layer_switches_total",
                "Times a subscriber was switched to another simulcast layer",
            )?,
            send_queue_holds: counter(
                "bedside_media_send_queue_holds_total",
                "Times a subscriber's video was held back because its send queue held more than 400 ms: its link carries less than its layer",
            )?,
            estimate_restarts: counter(
                "bedside_media_estimate_restarts_total",
                "Times a subscriber's bandwidth estimate collapsed while its link lost and held back nothing, and was measured again",
            )?,
            estimate_restarts_undone: counter(
                "bedside_media_estimate_restarts_undone_total",
                "Times a subscriber's link lost packets soon after its estimate was measured again: the collapse was real and the estimate went back",
            )?,
            estimate_floors: counter(
                "bedside_media_estimate_floors_total",
                "Times a subscriber's bandwidth estimate sank under what its lowest video layers need while its link lost nothing, and was measured again from there",
            )?,
            estimate_reprobes: counter(
                "bedside_media_estimate_reprobes_total",
                "Times a subscriber's bandwidth estimate stayed under what its next video layer needs for seconds without growing while its link lost nothing, and was measured again",
            )?,
            probes_for_move_up: counter(
                "bedside_media_probes_for_move_up_total",
                "Times a subscriber waiting for a higher video layer, on a link that lost nothing, had its link probed for that layer",
            )?,
            estimate_lifts: counter(
                "bedside_media_estimate_lifts_total",
                "Times a subscriber's video waited in its send queue while its bandwidth estimate was under what its layers carry and its link lost nothing, and the estimate was lifted to that",
            )?,
            keyframes_for_loss: counter(
                "bedside_media_keyframes_for_loss_total",
                "Keyframes asked of publishers as a subscriber's link began or stopped losing more than retransmission repairs",
            )?,
            received_height: reg(
                registry,
                Histogram::with_opts(hopts(
                    "bedside_media_received_video_height_pixels",
                    "Height of each remote video browsers decode, from their quality reports",
                    HEIGHT_BUCKETS,
                ))?,
            )?,
            received_fps: reg(
                registry,
                Histogram::with_opts(hopts(
                    "bedside_media_received_video_fps",
                    "Frame rate of each remote video browsers decode, from their quality reports",
                    FPS_BUCKETS,
                ))?,
            )?,
            freezes: counter(
                "bedside_media_video_freezes_total",
                "Video freezes browsers saw (their own freezeCount: no frame for well over the usual gap)",
            )?,
            send_estimate: reg(
                registry,
                Histogram::with_opts(hopts(
                    "bedside_media_send_estimate_bps",
                    "What publishing browsers estimate they can send (availableOutgoingBitrate), bits per second",
                    SEND_ESTIMATE_BUCKETS,
                ))?,
            )?,
            quality_reports: counter(
                "bedside_media_quality_reports_total",
                "Quality reports taken from browsers (about one per participant every 5 s)",
            )?,
            rtt: reg(
                registry,
                Histogram::with_opts(hopts(
                    "bedside_media_rtt_seconds",
                    "Round-trip time to each peer, sampled every second",
                    RTT_BUCKETS,
                ))?,
            )?,
            jitter: reg(
                registry,
                HistogramVec::new(
                    hopts(
                        "bedside_media_jitter_seconds",
                        "Interarrival jitter of received media, sampled every second, by kind",
                        JITTER_BUCKETS,
                    ),
                    &["kind"],
                )?,
            )?,
            loss: reg(
                registry,
                HistogramVec::new(
                    hopts(
                        "bedside_media_packet_loss_ratio",
                        "Fraction of packets lost per peer and second, from RTCP receiver reports, by direction (ingress: to the node, egress: from it)",
                        LOSS_BUCKETS,
                    ),
                    &["direction"],
                )?,
            )?,
            forward_delay: DurationHistogram(reg(
                registry,
                Histogram::with_opts(hopts(
                    "bedside_media_forward_delay_seconds",
                    "Time from a media packet's arrival at the node to its hand-off to subscribers",
                    DELAY_BUCKETS,
                ))?,
            )?),
            join_to_media: DurationHistogram(reg(
                registry,
                Histogram::with_opts(hopts(
                    "bedside_media_join_seconds",
                    "Time from a participant's token check to its first media frame, sent or received",
                    JOIN_BUCKETS,
                ))?,
            )?),
            placement: DurationHistogram(reg(
                registry,
                Histogram::with_opts(hopts(
                    "bedside_media_placement_seconds",
                    "Time to find a join's room's pod (and, for a join carried on, to reach it)",
                    PLACEMENT_BUCKETS,
                ))?,
            )?),
            heartbeat: Default::default(),
        };
        // Every label value exists from the start, so rates and alerts see zeros, not gaps.
        for reason in JoinRefusal::ALL {
            stats.joins_refused.with_label_values(&[reason.label()]);
        }
        for reason in [
            ConnectionFailure::EncryptionPolicy,
            ConnectionFailure::Ice,
            ConnectionFailure::Other,
        ] {
            stats
                .connection_failures
                .with_label_values(&[reason.label()]);
        }
        for kind in ["nack", "pli", "fir"] {
            stats.feedback.with_label_values(&[kind]);
        }
        for path in [MediaPath::Udp, MediaPath::Tcp, MediaPath::Relay] {
            stats.sessions_by_path.with_label_values(&[path.label()]);
        }
        Ok(stats)
    }

    /// Every metric name this node exports (with or without samples yet), for checks that a
    /// dashboard or an alert only uses what exists.
    pub fn metric_names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 48] = [
            &self.relayed,
            &self.signaling_connections,
            self.placement.inner(),
            &self.rooms,
            &self.forwarded_joins,
            &self.participants,
            &self.publishers,
            &self.subscribers,
            &self.connected,
            &self.srtp_sessions,
            &self.sessions_by_path,
            &self.relayed_bytes,
            &self.ice_tcp_connections,
            &self.ice_restarts,
            &self.connection_checks,
            &self.connection_failures,
            &self.joins_refused,
            &self.bytes,
            &self.packets,
            &self.send_dropped,
            &self.send_segmented,
            &self.receive_dropped,
            &self.loops,
            &self.packets_forwarded,
            &self.chat_messages,
            &self.chat_refused,
            &self.chat_dropped,
            &self.feedback,
            &self.layer_switches,
            &self.keyframes_for_loss,
            &self.send_queue_holds,
            &self.estimate_restarts,
            &self.estimate_restarts_undone,
            &self.estimate_floors,
            &self.estimate_reprobes,
            &self.estimate_lifts,
            &self.probes_for_move_up,
            &self.received_height,
            &self.received_fps,
            &self.freezes,
            &self.send_estimate,
            &self.quality_reports,
            &self.rtt,
            &self.jitter,
            &self.loss,
            self.forward_delay.inner(),
            self.join_to_media.inner(),
            &prometheus::process_collector::ProcessCollector::for_self(),
        ];
        let mut names: Vec<String> = collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn refused(&self, reason: JoinRefusal) {
        self.joins_refused
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn failed(&self, reason: ConnectionFailure) {
        self.connection_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// A connection completed DTLS with `profile` over `path`, `join_took` after its join.
    pub fn media_connected(&self, profile: &str, path: MediaPath, join_took: Duration) {
        self.connected.inc();
        self.srtp_sessions.with_label_values(&[profile]).inc();
        self.sessions_by_path
            .with_label_values(&[path.label()])
            .inc();
        self.join_to_media.record(join_took);
    }

    /// A peer's round trip and loss, as str0m reports them each second.
    pub fn peer(&self, peer: &str0m::stats::PeerStats) {
        if let Some(rtt) = peer.rtt {
            self.rtt.observe(rtt.as_secs_f64());
        }
        let losses = [
            ("ingress", peer.ingress_loss_fraction),
            ("egress", peer.egress_loss_fraction),
        ];
        for (direction, loss) in losses {
            if let Some(loss) = loss {
                self.loss
                    .with_label_values(&[direction])
                    .observe(f64::from(loss));
            }
        }
    }

    /// Interarrival jitter of an incoming track, in RTP clock units of its kind.
    pub fn ingress_jitter(&self, kind: MediaKind, jitter: u32) {
        let (label, clock) = match kind {
            MediaKind::Audio => ("audio", 48_000.0),
            MediaKind::Video => ("video", 90_000.0),
        };
        self.jitter
            .with_label_values(&[label])
            .observe(f64::from(jitter) / clock);
    }

    /// New NACK, PLI and FIR counts from a subscriber.
    pub fn feedback_received(&self, delta: [u64; 3]) {
        for (kind, n) in ["nack", "pli", "fir"].iter().zip(delta) {
            if n > 0 {
                self.feedback.with_label_values(&[kind]).inc_by(n);
            }
        }
    }

    /// A subscriber's bandwidth estimator was set to a rate (`recovery.rs`), for one reason.
    pub fn estimator_reset(&self, reset: Reset) {
        match reset {
            Reset::Restart(_) => self.estimate_restarts.inc(),
            Reset::Undo(_) => self.estimate_restarts_undone.inc(),
            Reset::Floor(_) => self.estimate_floors.inc(),
            Reset::Reprobe(_) => self.estimate_reprobes.inc(),
            Reset::Lift(_) => self.estimate_lifts.inc(),
        }
    }

    /// One frame offered to one subscriber.
    pub fn forwarded(&self, forward: &Forward) {
        if forward.written {
            self.packets_forwarded.inc();
        }
        if forward.hold_began {
            self.send_queue_holds.inc();
        }
        if let Some(lift) = forward.lifted {
            self.estimator_reset(lift);
        }
        if forward.switched {
            self.layer_switches.inc();
        }
        if let Some(took) = forward.join_took {
            self.join_to_media.record(took);
        }
    }

    /// One loop's rooms, publishers and subscribers went from `before` to `now`. The gauges
    /// are the node's, shared by its loops: each loop adds its own change, never sets them.
    pub fn room_gauges(&self, before: RoomCounts, now: RoomCounts) {
        let change = |gauge: &IntGauge, before: usize, now: usize| {
            gauge.add(now as i64 - before as i64);
        };
        change(&self.rooms, before.rooms, now.rooms);
        change(&self.publishers, before.publishers, now.publishers);
        change(&self.subscribers, before.subscribers, now.subscribers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_gauges_are_the_sum_of_every_loops_share() {
        let registry = Registry::new();
        let stats = EngineStats::new(&registry, "t", "n").expect("stats");
        let counts = |rooms, publishers, subscribers| RoomCounts {
            rooms,
            publishers,
            subscribers,
        };
        // Loop 0 holds a room with two people in it, loop 1 another; then loop 1's empties.
        stats.room_gauges(RoomCounts::default(), counts(1, 2, 2));
        stats.room_gauges(RoomCounts::default(), counts(1, 1, 1));
        assert_eq!(
            (
                stats.rooms.get(),
                stats.publishers.get(),
                stats.subscribers.get()
            ),
            (2, 3, 3)
        );
        stats.room_gauges(counts(1, 1, 1), RoomCounts::default());
        assert_eq!(
            (
                stats.rooms.get(),
                stats.publishers.get(),
                stats.subscribers.get()
            ),
            (1, 2, 2)
        );
    }

    #[test]
    fn metric_names_carry_units_and_labels_stay_fixed() {
        let registry = Registry::new();
        let _stats = EngineStats::new(&registry, "t", "n").expect("stats");
        for family in registry.gather() {
            let name = family.name();
            assert!(name.starts_with("bedside_media_"), "{name}");
            for metric in family.get_metric() {
                for label in metric.get_label() {
                    assert!(
                        [
                            "tenant",
                            "node",
                            "reason",
                            "direction",
                            "kind",
                            "profile",
                            "path"
                        ]
                        .contains(&label.name()),
                        "{name} has label {}",
                        label.name()
                    );
                }
            }
        }
    }
}
