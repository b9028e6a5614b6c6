//! A subscriber's link that loses what the node sends it: pure, so it is tested without a
//! network.
//!
//! str0m reports its bandwidth estimate averaged over 3 s, so when a subscriber's link
//! suddenly carries less (a phone leaves Wi-Fi, someone starts an upload) the layer choice
//! would follow seconds late while the frames pile up in str0m's pacer (which already sends
//! at its own, newer estimate) or are lost on the link. Two signals say it sooner, each
//! second: a stream whose receiver reports [`LOSS_LIMIT`] or more lost, and a stream the pacer
//! sent less than [`BACKLOG_RATIO`] of what the node wrote to it. Either caps what the layer
//! choice may use at what the link carried, for [`HOLD`] after the last such second, by which
//! time the estimate has followed.
//!
//! A receiver on such a link also loses more than retransmission repairs (resends are capped
//! at a share of the stream): a browser then shows a frozen picture until it gives up waiting
//! and asks for a keyframe itself, up to 3 s later in Chromium. So the edges of a lossy spell,
//! the first report at [`LOSS_LIMIT`] or more and the first one under it again, say that the
//! stream should start again from a keyframe ([`Restart`]).

use std::time::{Duration, Instant};

use str0m::media::Mid;

/// The share of packets lost, in one receiver report, from which a link counts as full.
/// Above what NACK and retransmission repair without a visible effect (the tests' 5% random
/// loss keeps the layer).
pub const LOSS_LIMIT: f32 = 0.1;
/// A stream sent at less than this share of what was written to it: the pacer holds back.
/// Carried bytes carry RTP headers and retransmissions on top of the written media, so a pacer
/// that keeps up sends more than was written.
pub const BACKLOG_RATIO: f64 = 0.7;
/// How long a full link's delivered rate caps the estimate after its last lossy report.
pub const HOLD: Duration = Duration::from_secs(5);
/// What a stream's rates are measured over, however often its statistics come: shorter, a
/// keyframe written at once and paced out over the next 200 ms would read as a pacer holding
/// back.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// What the rate a stream's send queue drains at is measured over: a statistics interval
/// (str0m's come every 250 ms), as that rate changes within a second when a link fills.
pub const SENDING_WINDOW: Duration = Duration::from_millis(200);

/// One outgoing video stream's rate and the loss its receiver reported.
#[derive(Debug, Clone)]
struct Stream {
    mid: Mid,
    /// What the stream had carried at the last statistics.
    last: Carried,
    at: Instant,
    bps: u64,
    /// What the link carried of this stream when it was last full (lossy or held back).
    full: Option<(u64, Instant)>,
    /// The last receiver report said [`LOSS_LIMIT`] or more was lost.
    lossy: bool,
    /// What the stream had carried at the start of the current [`SENDING_WINDOW`], and when.
    tick: (Carried, Instant),
    /// What the pacer sent of the stream over the last [`SENDING_WINDOW`], when it sent less
    /// than the node wrote then and over the window before (its queue stayed: this is its
    /// rate); 0 otherwise.
    draining_bps: u64,
    /// The pacer sent less than the node wrote over the last [`SENDING_WINDOW`].
    behind: bool,
    /// What the pacer sent of the stream over the last [`SENDING_WINDOW`], whatever was
    /// written.
    recent_bps: u64,
}

impl Stream {
    /// What the stream carries now: the last [`SENDING_WINDOW`]'s rate where it is lower than
    /// the last [`RATE_WINDOW`]'s. A link that fills is found full a second after it shrank,
    /// when the last full second's rate is still mostly from before; capped at that rate, a
    /// 600 kbit/s link was first moved to the middle layer, which it could not carry either,
    /// and down again 0.6 s later (node trace, picture bench, 2026-12-06).
    fn carries_bps(&self) -> u64 {
        [self.bps, self.recent_bps]
            .into_iter()
            .filter(|bps| *bps > 0)
            .min()
            .unwrap_or(0)
    }
}

/// What one stream's statistics mean for the picture its receiver shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Nothing beyond what retransmission repairs.
    No,
    /// A lossy spell began or ended: the receiver may hold frames it cannot decode, and a
    /// keyframe lets it go on (once at the start, as retransmission falls behind; once at the
    /// end, when a keyframe gets through whole).
    FromKeyframe,
}

/// What one outgoing stream has carried so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carried {
    /// Bytes the pacer sent, headers and retransmissions included (str0m's egress statistics).
    pub bytes: u64,
    /// Media bytes the node wrote to the stream.
    pub written: u64,
}

/// How long a reading of the link's own loss ([`EgressLink::link_loss`]) stands for the link:
/// str0m's statistics come every 250 ms.
pub const LINK_LOSS_FRESH: Duration = Duration::from_millis(600);

/// A subscriber's outgoing video streams, from its periodic egress statistics.
#[derive(Debug, Clone, Default)]
pub struct EgressLink {
    streams: Vec<Stream>,
    /// The share of what the node sent over the last second that never arrived, from the
    /// transport-wide feedback, and when it was read.
    link_loss: Option<(f32, Instant)>,
}

impl EgressLink {
    /// What the link itself lost (transport-wide feedback: each packet's own sequence number
    /// on this leg, so only what the node sent and the subscriber did not get). While fresh,
    /// it is taken instead of the receiver reports' loss, which also counts what the publisher
    /// lost on its way to the node: a patient on a lossy uplink would otherwise make every
    /// other subscriber's link look full.
    pub fn link_loss(&mut self, loss: f32, now: Instant) {
        self.link_loss = Some((loss, now));
    }

    /// The link's own loss over the last second, while the reading is fresh.
    pub fn recent_loss(&self, now: Instant) -> Option<f32> {
        self.link_loss
            .filter(|(_, at)| now.saturating_duration_since(*at) < LINK_LOSS_FRESH)
            .map(|(loss, _)| loss)
    }

    /// One stream's statistics: what it `carried` so far, `loss` the share lost its receiver
    /// reported since the last statistics (`None`: no report came; either way the link's own
    /// loss is taken while it is fresh).
    pub fn report(
        &mut self,
        mid: Mid,
        carried: Carried,
        loss: Option<f32>,
        now: Instant,
    ) -> Restart {
        let loss = self.recent_loss(now).or(loss);
        let Some(stream) = self.streams.iter_mut().find(|s| s.mid == mid) else {
            self.streams.push(Stream {
                mid,
                last: carried,
                at: now,
                bps: 0,
                full: None,
                lossy: false,
                tick: (carried, now),
                draining_bps: 0,
                behind: false,
                recent_bps: 0,
            });
            return Restart::No;
        };
        let (before, since) = (stream.tick.0, now.saturating_duration_since(stream.tick.1));
        let was_behind = stream.behind;
        if since >= SENDING_WINDOW {
            let sent = carried.bytes.saturating_sub(before.bytes);
            let written = carried.written.saturating_sub(before.written);
            stream.recent_bps = sent * 8 * 1000 / since.as_millis() as u64;
            // Carried bytes count headers too: a pacer that keeps up sends more than written.
            let behind = sent < written;
            // A window that ends with a burst (a keyframe, the first of a higher layer) sent
            // less than was written while its pacer kept up most of the time: its rate is what
            // was there to send, not what the pacer can send. Only a window that began behind
            // too was the pacer's own pace: read from a single window, the lowest layer's
            // rate right after a move up made the top layer's keyframe look 0.4 s deep, the
            // stream was held and moved down again (picture bench trace, 2026-12-06).
            stream.draining_bps = if behind && stream.behind {
                stream.recent_bps
            } else {
                0
            };
            stream.behind = behind;
            stream.tick = (carried, now);
        }
        let mut restart = Restart::No;
        if let Some(loss) = loss {
            let lossy = loss >= LOSS_LIMIT;
            if lossy != stream.lossy {
                restart = Restart::FromKeyframe;
            }
            stream.lossy = lossy;
        }
        let mut backlog = false;
        let elapsed = now.saturating_duration_since(stream.at);
        // A second whose last statistics interval is its first behind ends with a burst (a
        // higher layer's keyframe, written as the subscriber moved up): judged at the next
        // statistics instead, over the longer window. Judged at once, a 20-38 kB keyframe of
        // the top layer, written 0.1-0.3 s before a second ended that had carried the lower
        // layer, read as a pacer holding back 30-60% of the stream, and the subscriber was
        // moved back down at once, its next hold doubled (5 of about 150 Chromium runs of the
        // shaped-link test, one of them 17 s back, 2026-12-07).
        let burst = stream.behind && !was_behind;
        if elapsed >= RATE_WINDOW {
            let ms = elapsed.as_millis() as u64;
            let bps = |now: u64, before: u64| now.saturating_sub(before) * 8 * 1000 / ms;
            let sent_bps = bps(carried.bytes, stream.last.bytes);
            let written_bps = bps(carried.written, stream.last.written);
            let short = (sent_bps as f64) < written_bps as f64 * BACKLOG_RATIO;
            if !(short && burst) {
                stream.bps = sent_bps;
                stream.last = carried;
                stream.at = now;
                backlog = short;
            }
        }
        if let Some(loss) = loss.filter(|l| *l >= LOSS_LIMIT) {
            // In thousandths, so a reported 0.6 keeps exactly 40%.
            let kept = ((1.0 - loss.min(1.0)) * 1000.0).round() as u64;
            stream.full = Some((stream.carries_bps() * kept / 1000, now));
        } else if backlog {
            stream.full = Some((stream.carries_bps(), now));
        }
        restart
    }

    /// How long `queued_bytes` waiting in stream `mid`'s send queue take to leave at the rate
    /// its pacer sent over the last statistics interval, if the pacer sent less than the node
    /// wrote then and over the interval before (it was the bottleneck throughout, so that is
    /// its rate); `None` otherwise: a pacer that
    /// keeps up sends what is written, which says nothing of how fast it could send (a
    /// subscriber moving up to a layer with a larger keyframe would read as held back). The
    /// age of the queue's oldest packet says the same only while the node writes no faster
    /// than the pacer sends: on a link that fills, str0m's pacer follows its own
    /// estimate within a second while the node's layer choice follows the averaged one
    /// (str0m reports a 3 s mean), so it wrote 1.2 Mbit/s to a pacer sending 0.5, and by the
    /// time the oldest packet was 400 ms old a second's worth waited before the lower layer's
    /// keyframe (Chromium trace, 2026-12-06).
    pub fn drain_time(&self, mid: Mid, queued_bytes: usize) -> Option<Duration> {
        let stream = self.streams.iter().find(|s| s.mid == mid)?;
        let ms = (queued_bytes as u64 * 8 * 1000).checked_div(stream.draining_bps)?;
        Some(Duration::from_millis(ms))
    }

    /// The pacer's rate was set anew (its estimator was lifted): what it drained at before
    /// says nothing of how fast it drains now, until the next [`SENDING_WINDOW`] measures it.
    pub fn pacer_reset(&mut self) {
        for stream in &mut self.streams {
            stream.draining_bps = 0;
            stream.behind = false;
        }
    }

    /// The node stopped writing to stream `mid` as its send queue ran deep ([`QueueGate`]):
    /// the link is full at what the stream carried, as with a backlog the rates show, but
    /// now rather than at the next [`RATE_WINDOW`]. Without it the layers were chosen again
    /// for an estimate still well above the link (str0m's follows in seconds), and a
    /// 600 kbit/s link got the middle layer, whose keyframe then took a second to get through.
    pub fn queue_held(&mut self, mid: Mid, now: Instant) {
        if let Some(stream) = self.streams.iter_mut().find(|s| s.mid == mid && s.bps > 0) {
            stream.full = Some((stream.carries_bps(), now));
        }
    }

    /// A stream that ended (its source left).
    pub fn forget(&mut self, mid: Mid) {
        self.streams.retain(|s| s.mid != mid);
    }

    /// What the layer choice may use at most: while a stream's link was full within [`HOLD`]
    /// (lost [`LOSS_LIMIT`] or more, or held back by the pacer), the sum of what each stream
    /// carried then (a full one) or is sent (the others); `None` while no stream was full.
    pub fn ceiling(&self, now: Instant) -> Option<u64> {
        let recent = |s: &Stream| {
            s.full
                .filter(|(_, at)| now.saturating_duration_since(*at) < HOLD)
                .map(|(delivered, _)| delivered)
        };
        if !self.streams.iter().any(|s| recent(s).is_some()) {
            return None;
        }
        Some(
            self.streams
                .iter()
                .map(|s| recent(s).unwrap_or(s.bps))
                .sum(),
        )
    }
}

/// Video older than this still waiting in a subscriber's send queue (str0m's pacer, which
/// sends at its estimate of the link): the node stops writing to that stream. A keyframe of
/// the top layer waits about 200 ms at its own rate, so a clean link never gets here; a link
/// that carries less than its layer builds a queue of old frames that a lower layer's
/// keyframe would wait behind for a second or more (seen in the picture bench).
pub const QUEUE_HOLD_ABOVE: Duration = Duration::from_millis(400);
/// The queue has drained to this: the stream goes on, from a keyframe.
pub const QUEUE_RESUME_BELOW: Duration = Duration::from_millis(100);

/// Whether one subscriber's video stream takes more while its send queue is deep: pure, the
/// caller reads the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueGate {
    held: bool,
}

/// What to do with one video packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Write,
    /// The first packet after a hold (a keyframe's): it starts the stream again.
    WriteAfterHold,
    /// Dropped before it is numbered, so the receiver sees no gap to ask for again.
    /// `began`: this packet began the hold. `keyframe_wanted`: the queue has drained and the
    /// stream waits for a keyframe.
    Hold {
        began: bool,
        keyframe_wanted: bool,
    },
}

impl QueueGate {
    /// A video packet, the oldest packet in the stream's send queue having `waited`.
    pub fn admit(&mut self, waited: Duration, keyframe: bool) -> Gate {
        let began = !self.held;
        if !self.held {
            if waited <= QUEUE_HOLD_ABOVE {
                return Gate::Write;
            }
            self.held = true;
        }
        if waited >= QUEUE_RESUME_BELOW {
            return Gate::Hold {
                began,
                keyframe_wanted: false,
            };
        }
        if keyframe {
            self.held = false;
            return Gate::WriteAfterHold;
        }
        // A hold begins only past QUEUE_HOLD_ABOVE, so never here.
        Gate::Hold {
            began: false,
            keyframe_wanted: true,
        }
    }

    /// The stream is held: its link carries less than its layer.
    pub fn held(&self) -> bool {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link that starts losing 60% of a 2 Mbit/s stream caps the choice at the 800 kbit/s it
    /// delivered, for HOLD after its last lossy report; 5% loss (repaired by retransmission)
    /// caps nothing; another stream's rate adds to the ceiling as it is.
    #[test]
    fn heavy_loss_caps_the_choice_at_what_the_link_delivered_for_a_while() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let (video, screen) = (Mid::from("1"), Mid::from("2"));
        let mut e = EgressLink::default();
        // Carried with 4% of headers on what was written, as a pacer that keeps up does.
        let sent = |bytes: u64| Carried {
            bytes,
            written: bytes * 100 / 104,
        };
        // 2 Mbit/s: 250,000 bytes a second.
        e.report(video, sent(0), None, at(0));
        e.report(video, sent(250_000), Some(0.0), at(1_000));
        e.report(video, sent(500_000), Some(0.05), at(2_000));
        assert_eq!(
            e.ceiling(at(2_000)),
            None,
            "5% is repaired, not a full link"
        );

        e.report(screen, sent(0), None, at(2_000));
        e.report(screen, sent(25_000), None, at(3_000));
        e.report(video, sent(750_000), Some(0.6), at(3_000));
        assert_eq!(e.ceiling(at(3_000)), Some(800_000 + 200_000));

        // The layer went down; no loss now: the cap holds until HOLD after the lossy report.
        e.report(video, sent(775_000), Some(0.0), at(4_000));
        assert_eq!(e.ceiling(at(4_000)), Some(800_000 + 200_000));
        assert_eq!(e.ceiling(at(3_000) + HOLD), None);

        e.forget(video);
        e.report(screen, sent(50_000), Some(0.5), at(5_000));
        assert_eq!(e.ceiling(at(5_000)), Some(50_000));
    }

    /// A send queue's drain time is read at the rate the pacer sent over the last statistics
    /// interval while it sent less than the node wrote: a pacer that fell to 0.4 Mbit/s
    /// under 1.2 written takes 0.6 s for 30 KB. A pacer that keeps up gives no drain time.
    #[test]
    fn a_send_queue_drains_at_the_rate_the_pacer_sent_lately() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let video = Mid::from("1");
        let carried = |bytes: u64, written: u64| Carried { bytes, written };
        let mut e = EgressLink::default();
        assert_eq!(e.drain_time(video, 30_000), None, "no stream yet");
        e.report(video, carried(0, 0), None, at(0));
        assert_eq!(e.drain_time(video, 30_000), None, "no rate yet");
        e.report(video, carried(156_000, 150_000), None, at(1_000));
        assert_eq!(e.drain_time(video, 30_000), None, "the pacer keeps up");
        // A keyframe written late in a window: less sent than written, but the pacer kept up
        // until it came, so that window's rate is not the pacer's.
        e.report(video, carried(168_500, 187_500), None, at(1_250));
        assert_eq!(
            e.drain_time(video, 30_000),
            None,
            "a burst at the window's end"
        );
        // Still behind over the whole next window: that is the pacer's pace.
        e.report(video, carried(181_000, 225_000), None, at(1_500));
        assert_eq!(
            e.drain_time(video, 30_000),
            Some(Duration::from_millis(600))
        );
        e.report(video, carried(181_000, 262_500), None, at(1_750));
        assert_eq!(e.drain_time(video, 30_000), None, "sent nothing");
    }

    /// A send queue that runs deep fills the link at once, at what the stream carried.
    #[test]
    fn a_held_send_queue_caps_the_choice_at_what_the_stream_carried() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let video = Mid::from("1");
        let sent = |ms: u64| Carried {
            bytes: ms * 100,
            written: ms * 100,
        };
        let mut e = EgressLink::default();
        e.report(video, sent(0), None, at(0));
        e.queue_held(video, at(500));
        assert_eq!(e.ceiling(at(500)), None, "no rate measured yet");
        e.report(video, sent(1_000), Some(0.0), at(1_000));
        assert_eq!(e.ceiling(at(1_000)), None);
        e.queue_held(video, at(1_200));
        assert_eq!(e.ceiling(at(1_200)), Some(800_000));
        assert_eq!(e.ceiling(at(1_200) + HOLD), None);
    }

    /// A receiver whose reports count 30% lost, all of it lost before the node (a publisher on
    /// a lossy uplink), while the transport-wide feedback says this link lost nothing: the link
    /// is not full. Once that feedback is stale, the reports are what there is; and the
    /// link's own loss fills it as reports would.
    #[test]
    fn loss_upstream_of_the_node_does_not_fill_a_subscribers_link() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let video = Mid::from("1");
        let sent = |ms: u64| Carried {
            bytes: ms * 260,
            written: ms * 250,
        };
        let mut e = EgressLink::default();
        e.report(video, sent(0), None, at(0));
        e.link_loss(0.0, at(900));
        e.report(video, sent(1_000), Some(0.3), at(1_000));
        assert_eq!(e.ceiling(at(1_000)), None, "lost upstream");
        assert_eq!(e.recent_loss(at(1_000)), Some(0.0));
        assert_eq!(e.recent_loss(at(2_000)), None, "read 1.1 s before");
        e.report(video, sent(2_000), Some(0.3), at(2_000));
        assert!(
            e.ceiling(at(2_000)).is_some(),
            "no fresh feedback: the reports"
        );
        let mut e = EgressLink::default();
        e.report(video, sent(0), None, at(0));
        e.link_loss(0.25, at(900));
        e.report(video, sent(1_000), Some(0.0), at(1_000));
        assert_eq!(e.ceiling(at(1_000)), Some(2_080_000 * 3 / 4));
    }

    /// A receiver that starts losing more than retransmission repairs is sent a keyframe, and
    /// again once its loss is back under the limit; not on every lossy report between, nor
    /// for loss retransmission repairs, nor when no report came.
    #[test]
    fn a_lossy_spell_restarts_the_stream_from_a_keyframe_at_its_start_and_its_end() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let video = Mid::from("1");
        let mut e = EgressLink::default();
        let sent = |secs: u64| Carried {
            bytes: secs * 260_000,
            written: secs * 250_000,
        };
        let restarts: Vec<Restart> = [None, Some(0.05), Some(0.3), Some(0.4), None, Some(0.02)]
            .into_iter()
            .zip(0..)
            .map(|(loss, secs)| e.report(video, sent(secs), loss, at(secs)))
            .collect();
        use Restart::{FromKeyframe, No};
        assert_eq!(restarts, [No, No, FromKeyframe, No, No, FromKeyframe]);
    }

    /// A queue deeper than QUEUE_HOLD_ABOVE holds the stream until it drains below
    /// QUEUE_RESUME_BELOW, then asks for a keyframe and goes on from it; a keyframe's own
    /// burst on a clean link holds nothing.
    #[test]
    fn a_deep_send_queue_holds_the_video_until_it_drains_then_it_goes_on_from_a_keyframe() {
        let ms = Duration::from_millis;
        let mut g = QueueGate::default();
        assert_eq!(g.admit(ms(200), false), Gate::Write, "a keyframe's burst");
        let hold = |began, keyframe_wanted| Gate::Hold {
            began,
            keyframe_wanted,
        };
        assert_eq!(g.admit(ms(450), false), hold(true, false));
        assert!(g.held());
        assert_eq!(g.admit(ms(500), false), hold(false, false), "held already");
        assert_eq!(g.admit(ms(250), true), hold(false, false), "still draining");
        assert_eq!(
            g.admit(ms(50), false),
            hold(false, true),
            "drained: a keyframe"
        );
        assert_eq!(g.admit(ms(30), true), Gate::WriteAfterHold);
        assert_eq!(g.admit(ms(120), false), Gate::Write);
        assert!(!g.held());
    }

    /// The pacer, already at its newer estimate, sends 600 kbit/s of the 2 Mbit/s the node
    /// writes (statistics every 250 ms, as str0m's come): the choice is capped at the
    /// 600 kbit/s at the end of the second, before anything is lost.
    #[test]
    fn a_pacer_holding_back_what_the_node_writes_caps_the_choice_at_what_it_sends() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let video = Mid::from("1");
        let mut e = EgressLink::default();
        let sent = |bytes: u64, written: u64| Carried { bytes, written };
        e.report(video, sent(0, 0), None, at(0));
        for quarter in 1..=4 {
            let written = quarter * 62_500;
            e.report(
                video,
                sent(written * 26 / 25, written),
                None,
                at(quarter * 250),
            );
        }
        assert_eq!(
            e.ceiling(at(1_000)),
            None,
            "sent with its headers: keeping up"
        );
        for quarter in 1..=4 {
            let (bytes, written) = (260_000 + quarter * 18_750, 250_000 + quarter * 62_500);
            e.report(
                video,
                sent(bytes, written),
                Some(0.0),
                at(1_000 + quarter * 250),
            );
        }
        assert_eq!(e.ceiling(at(2_000)), Some(600_000));
    }

    /// A subscriber on a 500 kbit/s layer moves up: the top layer's 34 kB keyframe is written
    /// 0.2 s before the second ends and is still in the send queue then, so the second sent
    /// 65% of what was written. That is a burst being paced out, not a link that carries
    /// less: nothing is capped, at the end of the second nor once the keyframe is sent. A
    /// pacer that stays behind is capped a statistics interval later.
    #[test]
    fn a_higher_layers_keyframe_written_as_a_second_ends_is_no_backlog() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let video = Mid::from("1");
        let sent = |bytes: u64, written: u64| Carried { bytes, written };
        // A second of the 500 kbit/s layer, the keyframe written in its last 250 ms.
        let moved_up = || {
            let mut e = EgressLink::default();
            for (quarter, keyframe) in (0..=4).zip([0, 0, 0, 0, 34_000]) {
                let (written, now) = (quarter * 15_625, at(quarter * 250));
                e.report(video, sent(written, written + keyframe), None, now);
            }
            e
        };
        let mut e = moved_up();
        assert_eq!(e.ceiling(at(1_000)), None, "the keyframe being paced out");
        e.report(video, sent(131_000, 128_000), Some(0.0), at(1_250));
        assert_eq!(e.ceiling(at(1_250)), None, "the keyframe sent");
        // The same second on a pacer that stays behind after the keyframe.
        let mut e = moved_up();
        e.report(video, sent(80_000, 128_000), Some(0.0), at(1_250));
        assert_eq!(e.ceiling(at(1_250)), Some(512_000));
    }

    #[test]
    fn statistics_four_times_a_second_still_measure_rates_over_a_second() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let video = Mid::from("1");
        let mut e = EgressLink::default();
        let sent = |bytes: u64, written: u64| Carried { bytes, written };
        e.report(video, sent(0, 0), None, at(0));
        // A 60 kB keyframe written at once, a third of it paced out by the next statistics.
        e.report(video, sent(20_000, 60_000), None, at(250));
        assert_eq!(e.ceiling(at(250)), None, "a keyframe being paced out");
        e.report(video, sent(66_000, 64_000), None, at(500));
        e.report(video, sent(70_000, 68_000), None, at(750));
        e.report(video, sent(75_000, 72_000), None, at(1_000));
        assert_eq!(e.ceiling(at(1_000)), None, "all sent within the second");
        // Heavy loss is taken at once, at the last interval's rate where it is lower than
        // the last full second's (600 kbit/s): 5 kB in 250 ms, half of it lost.
        e.report(video, sent(80_000, 76_000), Some(0.5), at(1_250));
        assert_eq!(e.ceiling(at(1_250)), Some(80_000));
    }

    /// A 2 Mbit/s stream whose link shrinks to 600 kbit/s: the first lossy report comes a
    /// quarter of a second into the shrunken link, when the last full second still reads 2
    /// Mbit/s. The choice is capped at what the link delivered lately, not at what it carried
    /// before (which would keep a layer the link cannot carry for another second).
    #[test]
    fn a_link_that_shrinks_is_capped_at_what_it_delivered_lately() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let video = Mid::from("1");
        let mut e = EgressLink::default();
        let sent = |bytes: u64| Carried {
            bytes,
            written: bytes,
        };
        e.report(video, sent(0), None, at(0));
        for quarter in 1..=4 {
            e.report(video, sent(quarter * 62_500), Some(0.0), at(quarter * 250));
        }
        assert_eq!(e.ceiling(at(1_000)), None, "2 Mbit/s, nothing lost");
        // 18,750 bytes in the next 250 ms: 600 kbit/s; 40% of what was sent lost.
        e.report(video, sent(268_750), Some(0.4), at(1_250));
        assert_eq!(e.ceiling(at(1_250)), Some(360_000));
    }
}
