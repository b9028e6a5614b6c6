//! A subscriber's bandwidth estimate that collapses while its link carries everything: pure, so
//! it is tested without a network.
//!
//! str0m's delay-based estimate (as libwebrtc's) lowers itself to 85% of the acknowledged rate
//! on each overuse signal, and while that rate is under half the estimate it may do so again at
//! once. At the start of a call the acknowledged rate is low (the publisher's encoder is still
//! ramping up), and a receiver whose own CPU is busy (a browser starting three encoders) stamps
//! arrivals late, which reads as a growing queue: a clean link's estimate then falls from
//! 2.5 Mbit/s to under 0.5 Mbit/s within half a second (seen on loopback, 2026-12-05). str0m's
//! pacer sends at that estimate, so the layer choice has to follow it, and the estimate grows
//! back only by probes, seconds later: the clinician watched 640 px for 4-5 s of a call with
//! nothing in the way.
//!
//! Mid-call the same happens whenever the receiver stalls for a moment: a collapse from 1.7 to
//! 0.6 Mbit/s within 0.3 s, 10 s into a clean call, held the subscriber at 640 px for 15 s.
//!
//! libwebrtc probes after such a large drop only while the sender is application-limited (its
//! field trial for rapid recovery lifts that); an SFU's subscriber on its top layer is not.
//! Here a collapse to under [`COLLAPSE_BELOW`] of the recent highest estimate restarts the
//! estimator at [`RESTART_AT`] of that highest estimate, and its start-up probes measure the
//! link again, unless the link shows it shrank: the transport-wide feedback of the last second
//! reported [`LOSS_EVIDENCE`] or more lost (a link that shrank drops what its buffer cannot
//! hold; a stalled receiver loses nothing), or the link loses or holds back what the node sends
//! (`congestion.rs`), or the peer's own packets to the node are being lost ([`UPLINK_FRESH`]):
//! a link limited both ways drops the receiver's feedback with its media, so a shrunk link's
//! feedback at first reports no loss at all (picture bench, 2026-12-06: a restart to 3 Mbit/s
//! into a 600 kbit/s link 1.1 s after it shrank, its last second of feedback reading 0% lost;
//! in the next run, 0.75 s after the limit, the feedback still read 0% while 53% of the
//! patient's own packets to the node had been lost). Loss reported within [`CONFIRM_WITHIN`]
//! after a restart, or a reading that lost the peer's own packets within
//! [`UPLINK_CONFIRM_WITHIN`] of it, undoes it (the estimator is set back where it had
//! collapsed to) and ends restarts for the subscriber; there is at most one per
//! [`RESTART_AT_MOST_EVERY`].
//!
//! A link that shrank is followed, and str0m's estimate may then sink far below what the link
//! carries: after a spell of 50-60% loss on a 600 kbit/s link, its loss-based part held the
//! pacer at 0.11-0.17 Mbit/s for over 10 s while the link lost nothing (node trace, picture
//! bench, 2026-12-06). That is under what the lowest simulcast layer needs, so the send queue
//! filled, the video was held back and the picture stalled for half a second every second or
//! two. An estimate under the subscriber's floor (what its lowest layers need, `floor_bps`)
//! while the link's last second lost under [`LOSS_EVIDENCE`] restarts the estimator at the
//! floor ([`Reset::Floor`]), at most once per [`FLOOR_AT_MOST_EVERY`]: its probes measure the
//! link from there. A link that cannot carry the floor loses at it, and is then left alone.
//!
//! An estimate the layer choice keeps a layer above (its 80% band rides out a busy receiver's
//! jitter) still paces the layer under its rate, and the send queue grows until it holds the
//! video: video waiting [`LIFT_QUEUE_ABOVE`] on a link that loses nothing lifts the estimate
//! to what the layers carry ([`Recovery::backlogged`]), undone by loss as a restart is.

use std::time::{Duration, Instant};

/// An estimate under this share of the recent highest one has collapsed. (0.4 was tried on
/// 2026-12-06: a link shrinking from 3 to 0.6 Mbit/s takes the estimate to 55-59% of its high
/// before its loss is reported, and the restart then sends 2.7 Mbit/s into it for 0.3-0.5 s;
/// but the picture bench measured no gain from it, and in a CI run with it a clean-link call
/// missed the top layer for 15 s (cause not established), so it was not kept.)
pub const COLLAPSE_BELOW: f64 = 0.6;
/// Where a restarted estimator starts: libwebrtc probes at this share of the rate before a
/// large drop.
pub const RESTART_AT: f64 = 0.85;
/// How long an estimate counts as recent.
pub const RECENT: Duration = Duration::from_secs(5);
/// Transport-wide loss over the last second from which a collapse is the link's.
pub const LOSS_EVIDENCE: f32 = 0.02;
/// Loss this soon after a restart: the collapse was real.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(3);
/// A reading that lost the peer's own packets this soon after a restart: the collapse was
/// the link's. In the picture bench's traces (runs 42-43, 2026-12-06) four restarts came just
/// as a 600 kbit/s limit began, before any reading showed it; the first reading of the
/// patient's own packets lost came 30-150 ms after each, while the feedback, lost with them
/// on the limited link, read no loss for up to a second, and the link lost 50-66% for that
/// second at the restarted 2.7-3.0 Mbit/s, the lower layer's keyframe with it. Shorter than
/// [`CONFIRM_WITHIN`]: a peer's own sending can fill its uplink on a downlink that is fine.
pub const UPLINK_CONFIRM_WITHIN: Duration = Duration::from_secs(1);
/// The fewest seconds between two restarts of one subscriber's estimator. A link that
/// shrank ends restarts by its loss (the first undo); this only spaces them on a link that
/// lost nothing. (10 s until 2026-12-07: a busy receiver collapsed a clean call's estimate
/// twice 7 s apart, and the second collapse held its subscriber on the middle layer for 5 s:
/// Chromium test.)
pub const RESTART_AT_MOST_EVERY: Duration = Duration::from_secs(5);

/// How long a reading that lost [`LOSS_EVIDENCE`] or more of the peer's own packets to the
/// node stands, whatever the readings after it say (str0m's statistics come every 250 ms): on
/// a limited link a reading of 37% lost was followed by one of 0% while the link was still
/// limited, and the estimator was restarted into it at 2.6 Mbit/s (picture bench run 37).
pub const UPLINK_FRESH: Duration = Duration::from_millis(600);

/// The fewest seconds between two lifts of one subscriber's estimate to its floor.
pub const FLOOR_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// How long an estimate under what a move up needs is watched, on a link that loses nothing,
/// before it is judged: one that, at the pace it grew over that time, would not reach the move
/// up within as long again is measured again ([`Recovery::stagnant`]). (Until 2026-12-07 any
/// growth over 10% counted as growth: after a 600 kbit/s limit was lifted, str0m's own increase
/// took the estimate from 0.73 to 0.94 Mbit/s in 4 s, and 0.76 to 0.98, each short of the top
/// layer's move up, and the top layer came 12.1 and 17.0 s after the link was freed with no
/// measurement between: Chromium test traces.)
pub const STAGNANT_FOR: Duration = Duration::from_secs(4);
/// The fewest seconds between two measurements of a stagnant estimate. (10 s until
/// 2026-12-07: a measurement a few seconds before a limited link was freed, on the still
/// limited link, held the next one back, and the top layer came 8.7-13.9 s after the link was
/// freed, picture bench runs 57-58; in the engine's slow-link test 6 s brings it back in 3.0 s
/// instead of 5.1, with no try of the top layer while the link is slow.)
pub const REPROBE_AT_MOST_EVERY: Duration = Duration::from_secs(6);

/// How often a subscriber that waits for a move up, on a link that loses nothing both ways and
/// holds nothing back, has its link probed for it ([`Recovery::probe_up`]). str0m probes such a
/// link only when the bitrate it is asked for rises (an allocation probe), every 5 s while the
/// media fills under 65% of the estimate (ALR), or after its own 15 s of a flat estimate; between
/// probes the estimate grows by at most 8% a second. After a 600 kbit/s limit was lifted the first
/// probe came 0.2-2.6 s later, and a probe that measured low (0.3-1.15 Mbit/s on the freed link,
/// the node beside two busy Chromiums on two cores) ended the probes that follow a good result; the
/// next came 2-5 s later, and the top layer 11-19 s after the freeing (Chromium test traces with
/// str0m's probe log, 2026-12-07). A probe is a burst of 15 ms at twice the estimate: a limited
/// link's queue holds it.
pub const PROBE_UP_EVERY: Duration = Duration::from_millis(1500);

/// Video this long in a subscriber's send queue, on a link that loses nothing, while the
/// estimator's own estimate is under what the subscriber's layers carry: the pacer, not the
/// link, holds it back, and the estimate is lifted ([`Recovery::backlogged`]). Half the
/// send-queue hold's 400 ms (`congestion::QUEUE_HOLD_ABOVE`), so that the lift comes first.
pub const LIFT_QUEUE_ABOVE: Duration = Duration::from_millis(200);
/// The fewest seconds between two lifts of one subscriber's estimate to what its layers carry.
pub const LIFT_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// A restart of the estimator, kept until it is confirmed or undone.
#[derive(Debug, Clone, Copy)]
struct Restarted {
    at: Instant,
    /// Where the estimate had collapsed to: the estimator's own estimate then, where it was
    /// lower than the reported one (a 3 s average). Set back to the reported 2.06 Mbit/s on a
    /// 600 kbit/s link, where its own had read 0.59, the pacer sent 2.2 Mbit/s into the link
    /// and the lower layer's keyframe waited 1.7 s (picture bench run 37).
    from: u64,
}

/// What to do with a subscriber's estimator: set it to a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// A collapse the link did not show: measure again from here.
    Restart(u64),
    /// The link showed it shrank after a restart: back to where the estimate had collapsed to.
    Undo(u64),
    /// An estimate under what the lowest layers need on a link that loses nothing: measure
    /// again from that floor.
    Floor(u64),
    /// An estimate that stopped growing under what a move up needs, on a link that loses
    /// nothing: measure again from where it is.
    Reprobe(u64),
    /// An estimate under what the subscriber's layers carry, their video waiting in the send
    /// queue on a link that loses nothing: measure again from what they carry.
    Lift(u64),
}

impl Reset {
    pub fn bps(self) -> u64 {
        match self {
            Reset::Restart(bps)
            | Reset::Undo(bps)
            | Reset::Floor(bps)
            | Reset::Reprobe(bps)
            | Reset::Lift(bps) => bps,
        }
    }
}

/// One subscriber's estimates, and whether a collapse of them restarts the estimator.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// The first estimate is str0m's configured start, no measurement.
    started: bool,
    /// The highest measured estimate, and when; a value older than [`RECENT`] gives way to the
    /// last one reported, which held until now. (Given way to the next one, a call whose
    /// estimate held at 2.04 Mbit/s for 6 s took a fall to 0.9 as its new reference, and its
    /// subscriber sat on the middle layer for 7 s of a clean call: Chromium test, 2026-12-07.)
    highest: Option<(u64, Instant)>,
    /// The last estimate reported.
    previous: Option<u64>,
    /// When the last collapse restarted the estimator.
    last_restart: Option<Instant>,
    /// The last restart or lift, which loss soon after undoes.
    unconfirmed: Option<Restarted>,
    /// When the estimate was last lifted to what the layers carry.
    last_lift: Option<Instant>,
    /// A restart was undone: this link's collapses are real.
    trusted: bool,
    /// When the estimate was last lifted to the floor.
    last_floor: Option<Instant>,
    /// When a reading last lost [`LOSS_EVIDENCE`] or more of the peer's own packets to the node.
    uplink_lossy_at: Option<Instant>,
    /// The estimator's own estimate at that reading (str0m's `bwe_tx`): what its pacer sends
    /// at, where the estimate it reports is a 3 s average.
    own_bps: Option<u64>,
    /// Since when the estimate has stayed under what a move up needs without growing, and
    /// what it was then.
    stagnant_since: Option<(Instant, u64)>,
    /// When a stagnant estimate was last measured again.
    last_reprobe: Option<Instant>,
    /// When the link was last probed for a move up ([`Recovery::probe_up`]).
    last_probe_up: Option<Instant>,
}

impl Recovery {
    /// A new estimate of `bps`; `link_full`: the link loses or holds back what the node sends
    /// now (a collapse then is no surprise); `recent_loss`: what the transport-wide feedback
    /// of the last second reported lost, if read lately (`EgressLink::recent_loss`). A full
    /// link does not undo a restart: the collapse itself slows the pacer, and what it held
    /// back before the restart shows as a full link for a second after.
    pub fn estimate(
        &mut self,
        bps: u64,
        link_full: bool,
        recent_loss: Option<f32>,
        now: Instant,
    ) -> Option<Reset> {
        if !std::mem::replace(&mut self.started, true) {
            return None;
        }
        let previous = self.previous.replace(bps);
        if self
            .highest
            .is_some_and(|(_, at)| now.saturating_duration_since(at) >= RECENT)
        {
            // str0m reports its estimate as it changes: the last one held until now.
            self.highest = previous.map(|bps| (bps, now));
        }
        let Some((highest, _)) = self.highest else {
            self.highest = Some((bps, now));
            return None;
        };
        if bps >= highest {
            self.highest = Some((bps, now));
            return None;
        }
        let collapsed = (bps as f64) < highest as f64 * COLLAPSE_BELOW;
        let lossy = recent_loss.is_some_and(|loss| loss >= LOSS_EVIDENCE) || self.uplink_lossy(now);
        // A fall after a measurement of a stagnant estimate is that measurement proven
        // wrong (a probe that fit in the link's buffer), not a receiver that stalled.
        let may = once_per(self.last_restart, RESTART_AT_MOST_EVERY, now)
            && once_per(self.last_reprobe, RECENT, now);
        if !collapsed || link_full || lossy || !may || self.trusted {
            return None;
        }
        self.last_restart = Some(now);
        self.unconfirmed = Some(Restarted {
            at: now,
            from: self.lower_of_own(bps),
        });
        self.highest = None;
        Some(Reset::Restart((highest as f64 * RESTART_AT) as u64))
    }

    /// A reading of the peer's link: what the node lost of the peer's own packets since the
    /// last one (str0m's transport-wide receive register), and the estimator's own estimate.
    pub fn link_read(&mut self, uplink_loss: Option<f32>, own_bps: Option<u64>, now: Instant) {
        if uplink_loss.is_some_and(|loss| loss >= LOSS_EVIDENCE) {
            self.uplink_lossy_at = Some(now);
        }
        self.own_bps = own_bps;
    }

    /// What the layer choice may take of the reported `estimate`: while the node loses the
    /// peer's own packets, no more than the estimator's own estimate. Such a link is limited
    /// both ways, and the average trails a shrinking one by seconds: 0.77 s after a 600 kbit/s
    /// limit the estimator's own read 247 kbit/s and the average 1.75 Mbit/s; the top layer
    /// went on into the pacer until its queue held the stream, and the lower layer's picture
    /// waited 1.5 s behind that queue (picture bench, 2026-12-06). On other links the average
    /// rides out the estimator's own dips, as before, but a rise the estimator measured counts
    /// at once unless the link is `full`: the average trails it by up to 3 s (str0m averages
    /// the estimates of its last 3 s), and after a 600 kbit/s limit was lifted the estimator's
    /// own read 2.74 Mbit/s for 2.5 s while the average still read 0.85 (picture bench run
    /// 42). A move up still waits for its hold, with the link padded to prove it
    /// (`simulcast::Pad::Prove`), so a probe that fit in the link's buffer moves nobody.
    pub fn usable(&self, estimate: u64, full: bool, now: Instant) -> u64 {
        match self.own_bps {
            Some(own) if self.uplink_lossy(now) => estimate.min(own),
            Some(own) if !full => estimate.max(own),
            _ => estimate,
        }
    }

    /// The estimator was set to a rate: its own estimate is read again.
    pub fn estimator_reset(&mut self) {
        self.own_bps = None;
    }

    /// The link shrinks: the node loses the peer's own packets and the estimator's own
    /// estimate is under the reported `estimate`. The layer choice then takes the link as full
    /// (the layer it moves to leaves room for what is queued and for its keyframe): chosen
    /// with the usual headroom, a 600 kbit/s link was first moved to the middle layer at
    /// 655 kbit/s of estimate, whose keyframe was lost on the link, and to the lowest 0.5 s
    /// later (picture bench run 35). So too while the estimator's own estimate is not read
    /// again since the node set it: a restart undone by the peer's own packets lost went to
    /// the middle layer first in 3 calls of 5, its keyframe lost on the link, and to the
    /// lowest 0.5 s later (picture bench run 52).
    pub fn shrinking(&self, estimate: u64, now: Instant) -> bool {
        self.uplink_lossy(now) && self.own_bps.is_none_or(|own| own < estimate)
    }

    /// The link's last second lost under [`LOSS_EVIDENCE`] (`recent_loss`, read lately) and
    /// the peer's own packets to the node arrive.
    fn clean_both_ways(&self, recent_loss: Option<f32>, now: Instant) -> bool {
        recent_loss.is_some_and(|loss| loss < LOSS_EVIDENCE) && !self.uplink_lossy(now)
    }

    fn uplink_lossy(&self, now: Instant) -> bool {
        self.uplink_lossy_at
            .is_some_and(|at| now.saturating_duration_since(at) < UPLINK_FRESH)
    }

    /// An estimate of `bps` under `floor_bps` while the link's last second lost under
    /// [`LOSS_EVIDENCE`] (`recent_loss`, `None` if not read lately: then nothing is known and
    /// nothing is done) is lifted to the floor, at most once per [`FLOOR_AT_MOST_EVERY`].
    pub fn starved(
        &mut self,
        bps: u64,
        floor_bps: u64,
        recent_loss: Option<f32>,
        now: Instant,
    ) -> Option<Reset> {
        let clean = recent_loss.is_some_and(|loss| loss < LOSS_EVIDENCE);
        let may = once_per(self.last_floor, FLOOR_AT_MOST_EVERY, now);
        if bps >= floor_bps || !clean || !may {
            return None;
        }
        self.last_floor = Some(now);
        Some(Reset::Floor(floor_bps))
    }

    /// What a move up of the subscriber's video needs (`up_bps`, `None` when all of it is at its
    /// best layer), while the subscriber waits for it on a clean link: the estimate of `bps` is
    /// under it, and the link lost under [`LOSS_EVIDENCE`] both ways and held nothing back
    /// (`link_full`). What [`Recovery::stagnant`] and [`Recovery::probe_up`] act on.
    ///
    /// Under `up_bps` is judged as the layer choice judges it ([`Recovery::usable`]): an
    /// estimator whose own estimate reached the move up has measured the link, and the move
    /// waits only for its hold. Judged by the reported average alone, which trails it by up to
    /// 3 s, such an estimator was set back: after a 600 kbit/s limit was lifted, its own read
    /// 1.9-2.5 Mbit/s against a move up of 1.3, the average 1.06; the measurement reset it to
    /// 1.06, the waiting move up was dropped and the top layer came 2.3 s later (Chromium test
    /// trace, 2026-12-07).
    pub fn waiting_for_up(
        &self,
        bps: u64,
        up_bps: Option<u64>,
        recent_loss: Option<f32>,
        link_full: bool,
        now: Instant,
    ) -> Option<u64> {
        let clean = self.clean_both_ways(recent_loss, now) && !link_full;
        up_bps.filter(|up| clean && self.usable(bps, link_full, now) < *up)
    }

    /// An estimate of `bps` that has stayed under the move up it is `waiting` for
    /// ([`Recovery::waiting_for_up`]) for [`STAGNANT_FOR`], growing too slowly to reach it
    /// within as long again, is measured again from where it is (the lower of the reported and
    /// the estimator's own), at most once per [`REPROBE_AT_MOST_EVERY`].
    pub fn stagnant(&mut self, bps: u64, waiting: Option<u64>, now: Instant) -> Option<Reset> {
        let Some(up) = waiting else {
            self.stagnant_since = None;
            return None;
        };
        let (since, from) = *self.stagnant_since.get_or_insert((now, bps));
        let watched = now.saturating_duration_since(since);
        if watched < STAGNANT_FOR {
            return None;
        }
        // The pace of the time watched, over as long as STAGNANT_FOR again.
        let pace = (bps as f64 / from.max(1) as f64)
            .powf(STAGNANT_FOR.as_secs_f64() / watched.as_secs_f64());
        if bps as f64 * pace >= up as f64 {
            self.stagnant_since = Some((now, bps));
            return None;
        }
        let may = once_per(self.last_reprobe, REPROBE_AT_MOST_EVERY, now);
        if !may {
            return None;
        }
        self.stagnant_since = None;
        self.last_reprobe = Some(now);
        Some(Reset::Reprobe(self.lower_of_own(bps)))
    }

    /// Whether to probe the link for a move up now: the subscriber is `waiting` for one
    /// ([`Recovery::waiting_for_up`]) and the last probe asked for is [`PROBE_UP_EVERY`] old. A
    /// probe that finds the room lifts the estimate at once, and the move up still waits for
    /// its hold, the link padded to prove it.
    pub fn probe_up(&mut self, waiting: Option<u64>, now: Instant) -> bool {
        let due = once_per(self.last_probe_up, PROBE_UP_EVERY, now);
        if waiting.is_none() || !due {
            return false;
        }
        self.last_probe_up = Some(now);
        true
    }

    /// The lower of `bps` (the reported estimate) and the estimator's own, where it is read.
    fn lower_of_own(&self, bps: u64) -> u64 {
        self.own_bps.map_or(bps, |own| own.min(bps))
    }

    /// An estimate under `carry_bps` (what the subscriber's layers carry, with their headers,
    /// resends and audio: `Participant::carry_bps`) while its video has waited `queued` in
    /// the send queue, [`LIFT_QUEUE_ABOVE`] or more, on a link whose last second lost under
    /// [`LOSS_EVIDENCE`] both ways, is lifted to `carry_bps`, at most once per
    /// [`LIFT_AT_MOST_EVERY`], and loss soon after undoes it as it undoes a restart.
    ///
    /// str0m's pacer sends at 1.1 times its own estimate, and one overuse signal sets that to
    /// 85% of what the receiver acknowledged: on a top layer that fills what it is sent, the
    /// pacer then sends under what the node writes, while the layer choice keeps the layer
    /// (`simulcast::KEEP_ABOVE`: one such step is a busy receiver's jitter). A busy receiver
    /// gives such steps again and again, the queue grows, and the send-queue hold stops the
    /// video and moves the subscriber to its lowest layer: in a CI run the clean-link test's
    /// estimator sat at 0.65-1.34 Mbit/s under a 1.1 Mbit/s top layer on loopback, the queue
    /// reached 400 ms in 2.3 s, and the top layer came back 11 s later (2026-12-07). Kept,
    /// the layer needs the pacer to carry it.
    pub fn backlogged(
        &mut self,
        bps: u64,
        carry_bps: u64,
        queued: Duration,
        recent_loss: Option<f32>,
        now: Instant,
    ) -> Option<Reset> {
        let clean = self.clean_both_ways(recent_loss, now);
        let may = once_per(self.last_lift, LIFT_AT_MOST_EVERY, now);
        let from = self.lower_of_own(bps);
        if from >= carry_bps || queued < LIFT_QUEUE_ABOVE || !clean || !may || self.trusted {
            return None;
        }
        self.last_lift = Some(now);
        self.unconfirmed = Some(Restarted { at: now, from });
        Some(Reset::Lift(carry_bps))
    }

    /// The share of packets the transport-wide feedback of the last second reported lost, if
    /// read now. Loss soon after a restart (or a lift, [`Recovery::backlogged`]) says it was
    /// wrong: it is undone; so does a reading of the peer's own packets lost
    /// ([`Recovery::link_read`]) taken since it and within [`UPLINK_CONFIRM_WITHIN`] of it.
    pub fn loss(&mut self, feedback: Option<f32>, now: Instant) -> Option<Reset> {
        let uplink_lossy_at = self.uplink_lossy_at;
        let restart = self.unconfirmed.filter(|r| {
            let fed_back = feedback.is_some_and(|loss| loss >= LOSS_EVIDENCE)
                && now.saturating_duration_since(r.at) < CONFIRM_WITHIN;
            let uplink = uplink_lossy_at
                .and_then(|at| at.checked_duration_since(r.at))
                .is_some_and(|since| since < UPLINK_CONFIRM_WITHIN);
            (fed_back || uplink) && !self.trusted
        })?;
        self.trusted = true;
        Some(Reset::Undo(restart.from))
    }
}

/// Whether what was last done at `last` may be done again at `now`, at most once per `every`.
fn once_per(last: Option<Instant>, every: Duration, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= every)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading of a subscriber's link: its estimate, what its move up needs, what the
    /// feedback of the last second reported lost, and whether the link is full.
    type Reading = (u64, Option<u64>, Option<f32>, bool);

    /// [`Recovery::stagnant`] on what [`Recovery::waiting_for_up`] makes of a reading.
    fn stagnant(r: &mut Recovery, (bps, up, loss, full): Reading, now: Instant) -> Option<Reset> {
        let waiting = r.waiting_for_up(bps, up, loss, full, now);
        r.stagnant(bps, waiting, now)
    }

    /// [`Recovery::probe_up`] on what [`Recovery::waiting_for_up`] makes of a reading.
    fn probe_up(r: &mut Recovery, (bps, up, loss, full): Reading, now: Instant) -> bool {
        let waiting = r.waiting_for_up(bps, up, loss, full, now);
        r.probe_up(waiting, now)
    }

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    /// The estimates of a clean loopback call whose receiver's CPU was busy (2026-12-05).
    const COLLAPSE: [(u64, u64); 6] = [
        (0, 2_500_000),
        (200, 1_402_992),
        (510, 1_040_130),
        (515, 858_949),
        (520, 750_440),
        (600, 388_000),
    ];

    /// From 2 Mbit/s to 0.6 within 200 ms, on a link that lost nothing: restarted.
    fn restarted(start: Instant) -> Recovery {
        let mut r = Recovery::default();
        r.estimate(2_500_000, false, None, at(start, 0));
        r.estimate(2_000_000, false, None, at(start, 100));
        assert_eq!(
            r.estimate(600_000, false, None, at(start, 300)),
            Some(Reset::Restart(1_700_000))
        );
        r
    }

    #[test]
    fn a_collapse_on_a_link_that_loses_nothing_restarts_the_estimator() {
        let start = Instant::now();
        let mut r = Recovery::default();
        let restarts: Vec<(u64, u64)> = COLLAPSE
            .iter()
            .filter_map(|(ms, bps)| {
                r.estimate(*bps, false, None, at(start, *ms))
                    .map(|s| (*ms, s.bps()))
            })
            .collect();
        // Measured from 1.4 Mbit/s (the start value counts for nothing), collapsed at 0.75.
        assert_eq!(restarts, vec![(520, 1_192_543)]);
        // A clean second after it confirms nothing; another collapse within five seconds is
        // followed.
        assert_eq!(r.loss(Some(0.0), at(start, 1_000)), None);
        assert_eq!(r.estimate(2_400_000, false, None, at(start, 1_500)), None);
        assert_eq!(r.estimate(900_000, false, None, at(start, 2_000)), None);
        // Ten seconds on, and mid-call, a collapse is recovered again.
        assert_eq!(r.estimate(2_400_000, false, None, at(start, 11_000)), None);
        assert_eq!(
            r.estimate(1_000_000, false, None, at(start, 11_200)),
            Some(Reset::Restart(2_040_000))
        );
    }

    #[test]
    fn a_collapse_on_a_link_that_loses_or_holds_back_is_followed() {
        let start = Instant::now();
        let mut full = Recovery::default();
        let mut lossy = Recovery::default();
        for (ms, bps) in COLLAPSE {
            assert_eq!(full.estimate(bps, true, None, at(start, ms)), None);
            assert_eq!(lossy.estimate(bps, false, Some(0.15), at(start, ms)), None);
        }
        // Loss under the evidence is none (the reading's age is `EgressLink::recent_loss`'s).
        let mut clean = Recovery::default();
        clean.estimate(2_500_000, false, Some(0.01), at(start, 1_000));
        clean.estimate(2_000_000, false, Some(0.01), at(start, 1_900));
        assert_eq!(
            clean.estimate(600_000, false, Some(0.01), at(start, 2_000)),
            Some(Reset::Restart(1_700_000))
        );
    }

    /// Run 31 of the picture bench (2026-12-06): both ways of the patient's link limited, the
    /// feedback of the last second read no loss, yet 53% of the patient's own packets had not
    /// reached the node. A stalled receiver's packets arrive.
    #[test]
    fn a_collapse_while_the_peers_own_packets_are_lost_is_followed() {
        let start = Instant::now();
        // From 3.4 to 2 Mbit/s, the feedback clean, with the uplink's loss read at `read_ms`.
        let collapse = |uplink: f32, read_ms: u64| {
            let mut r = Recovery::default();
            r.estimate(3_500_000, false, Some(0.0), at(start, 0));
            r.estimate(3_400_000, false, Some(0.0), at(start, 100));
            r.link_read(Some(uplink), None, at(start, read_ms));
            r.estimate(2_000_000, false, Some(0.0), at(start, 1_000))
        };
        assert_eq!(collapse(0.53, 900), None);
        // An old reading says nothing about now; a clean one lets the restart happen.
        assert_eq!(collapse(0.53, 300), Some(Reset::Restart(2_890_000)));
        assert_eq!(collapse(0.01, 900), Some(Reset::Restart(2_890_000)));
        // A clean reading right after a lossy one does not clear it (picture bench run 37:
        // 37% lost, then 0% 250 ms later on the still limited link).
        let mut r = Recovery::default();
        r.estimate(3_500_000, false, Some(0.0), at(start, 0));
        r.estimate(3_400_000, false, Some(0.0), at(start, 100));
        r.link_read(Some(0.37), None, at(start, 600));
        r.link_read(Some(0.0), None, at(start, 850));
        assert_eq!(
            r.estimate(2_000_000, false, Some(0.0), at(start, 1_000)),
            None
        );
    }

    /// Picture bench run 37: the reported estimate 2.06 Mbit/s at the collapse, the
    /// estimator's own 0.59; the loss after the restart sets it back to the lower.
    #[test]
    fn an_undone_restart_goes_back_to_the_estimators_own_estimate_where_it_was_lower() {
        let start = Instant::now();
        let mut r = Recovery::default();
        r.estimate(4_600_000, false, Some(0.0), at(start, 0));
        r.estimate(4_500_000, false, Some(0.0), at(start, 100));
        r.link_read(Some(0.0), Some(590_711), at(start, 500));
        assert_eq!(
            r.estimate(2_057_480, false, Some(0.0), at(start, 700)),
            Some(Reset::Restart(3_825_000))
        );
        assert_eq!(
            r.loss(Some(0.28), at(start, 1_500)),
            Some(Reset::Undo(590_711))
        );
    }

    /// Run 33 of the picture bench: 0.77 s after the limit, 53% of the patient's own packets
    /// lost, the estimator's own estimate 247 kbit/s, the reported one 1.75 Mbit/s.
    #[test]
    fn while_the_peers_own_packets_are_lost_the_choice_follows_the_estimators_own_estimate() {
        let start = Instant::now();
        let mut r = Recovery::default();
        r.link_read(Some(0.0), Some(246_586), at(start, 0));
        assert_eq!(
            r.usable(1_750_666, false, at(start, 100)),
            1_750_666,
            "a clean uplink"
        );
        assert!(!r.shrinking(1_750_666, at(start, 100)), "a clean uplink");
        r.link_read(Some(0.53), Some(246_586), at(start, 500));
        assert_eq!(r.usable(1_750_666, false, at(start, 600)), 246_586);
        assert!(r.shrinking(1_750_666, at(start, 600)));
        assert!(
            !r.shrinking(200_000, at(start, 600)),
            "the average is the lower"
        );
        assert!(!r.shrinking(1_750_666, at(start, 1_200)), "a stale reading");
        assert_eq!(
            r.usable(1_750_666, false, at(start, 1_200)),
            1_750_666,
            "a stale reading"
        );
        // No reading of the uplink this time, and the last one is stale.
        r.link_read(None, Some(300_000), at(start, 1_300));
        assert_eq!(r.usable(1_750_666, false, at(start, 1_300)), 1_750_666);
        r.link_read(Some(0.2), Some(2_000_000), at(start, 1_500));
        assert_eq!(
            r.usable(1_750_666, false, at(start, 1_500)),
            1_750_666,
            "never more"
        );
    }

    /// Run 42: a probe read the freed link at 2.74 Mbit/s, the average still 0.85.
    #[test]
    fn a_rise_the_estimator_measured_counts_at_once_unless_the_link_is_full() {
        let start = Instant::now();
        let mut r = Recovery::default();
        r.link_read(Some(0.0), Some(2_738_490), at(start, 0));
        assert_eq!(r.usable(848_938, false, at(start, 100)), 2_738_490);
        assert_eq!(r.usable(848_938, true, at(start, 100)), 848_938, "full");
        // Set to a rate: the reading before it no longer says what the estimator holds.
        r.estimator_reset();
        assert_eq!(r.usable(848_938, false, at(start, 200)), 848_938);
    }

    #[test]
    fn loss_soon_after_a_restart_undoes_it_and_collapses_are_followed_from_then_on() {
        let start = Instant::now();
        let mut r = restarted(start);
        // The link shrank: the estimator goes back to where it had collapsed to.
        assert_eq!(
            r.loss(Some(0.3), at(start, 900)),
            Some(Reset::Undo(600_000))
        );
        assert_eq!(r.loss(Some(0.3), at(start, 1_900)), None, "undone once");
        for s in [20_000, 40_000] {
            r.estimate(2_000_000, false, None, at(start, s));
            assert_eq!(r.estimate(600_000, false, None, at(start, s + 200)), None);
        }
        // A full link just after a restart is what the collapse held back: no undo.
        let mut held = restarted(start);
        assert_eq!(held.estimate(1_700_000, true, None, at(start, 800)), None);
    }

    /// Picture bench runs 42-43: a restart just as a 600 kbit/s limit began; the first reading
    /// of the patient's own packets lost came 60 ms after it, the feedback still clean.
    #[test]
    fn the_peers_own_packets_lost_soon_after_a_restart_undo_it() {
        let start = Instant::now();
        let mut r = restarted(start);
        r.link_read(Some(0.01), Some(2_400_000), at(start, 360));
        assert_eq!(
            r.loss(Some(0.0), at(start, 360)),
            None,
            "under the evidence"
        );
        // As the engine reads a link: the reading, then the undo, then the estimator set.
        r.link_read(Some(0.55), Some(2_400_000), at(start, 400));
        assert_eq!(
            r.loss(Some(0.0), at(start, 400)),
            Some(Reset::Undo(600_000))
        );
        r.estimator_reset();
        assert!(
            r.shrinking(600_000, at(start, 400)),
            "the link shrank, and the estimator is not read since it was set"
        );
        r.link_read(Some(0.55), None, at(start, 650));
        assert_eq!(r.loss(Some(0.0), at(start, 650)), None, "undone once");
        // A second after the restart, the peer's own packets lost say nothing of the downlink.
        let mut late = restarted(start);
        late.link_read(Some(0.55), None, at(start, 1_300));
        assert_eq!(late.loss(Some(0.0), at(start, 1_300)), None);
        assert_eq!(
            late.loss(Some(0.05), at(start, 1_600)),
            Some(Reset::Undo(600_000)),
            "the feedback's loss still does"
        );
        // Nor does a reading taken before the restart.
        let mut before = Recovery::default();
        before.estimate(2_500_000, false, None, at(start, 0));
        before.estimate(2_000_000, false, None, at(start, 100));
        before.link_read(Some(0.55), None, at(start, 150));
        before.link_read(Some(0.0), None, at(start, 900));
        assert_eq!(
            before.estimate(600_000, false, None, at(start, 1_000)),
            Some(Reset::Restart(1_700_000))
        );
        assert_eq!(before.loss(Some(0.0), at(start, 1_100)), None);
    }

    /// The CI run's clean loopback call (2026-12-07): a top layer of 1.1 Mbit/s (1.375 with
    /// headroom), the estimator's own at 0.86 Mbit/s and the video 250 ms in the send queue.
    #[test]
    fn video_waiting_under_an_estimate_below_what_the_layers_carry_lifts_it() {
        let start = Instant::now();
        let queued = Duration::from_millis(250);
        let mut r = Recovery::default();
        r.link_read(Some(0.0), Some(860_000), at(start, 0));
        let shallow = Duration::from_millis(150);
        assert_eq!(
            r.backlogged(970_000, 1_375_000, shallow, Some(0.0), at(start, 0)),
            None,
            "a queue the pacer drains at its own pace"
        );
        assert_eq!(
            r.backlogged(970_000, 1_375_000, queued, Some(0.0), at(start, 0)),
            Some(Reset::Lift(1_375_000))
        );
        r.estimator_reset();
        assert_eq!(
            r.backlogged(970_000, 1_375_000, queued, Some(0.0), at(start, 1_500)),
            None,
            "at most one lift in 2 s"
        );
        assert_eq!(
            r.backlogged(970_000, 1_375_000, queued, Some(0.0), at(start, 2_000)),
            Some(Reset::Lift(1_375_000))
        );
        // The reported estimate carries the layers, the estimator's own does not: the pacer
        // sends at its own.
        r.link_read(Some(0.0), Some(900_000), at(start, 4_000));
        assert_eq!(
            r.backlogged(1_500_000, 1_375_000, queued, Some(0.0), at(start, 4_000)),
            Some(Reset::Lift(1_375_000))
        );
        // An estimate that carries the layers: the queue is the link's.
        r.link_read(Some(0.0), Some(1_400_000), at(start, 6_000));
        assert_eq!(
            r.backlogged(1_500_000, 1_375_000, queued, Some(0.0), at(start, 6_000)),
            None
        );
    }

    /// A link that loses, or whose loss is not read lately, or that lost the peer's own
    /// packets, or whose collapses proved real, is not lifted; loss soon after a lift undoes
    /// it, back to the estimator's own estimate, and ends lifts.
    #[test]
    fn a_lift_waits_for_a_clean_link_and_loss_undoes_it() {
        let start = Instant::now();
        let queued = Duration::from_millis(300);
        let mut r = Recovery::default();
        for loss in [Some(0.05), None] {
            assert_eq!(
                r.backlogged(900_000, 1_375_000, queued, loss, at(start, 0)),
                None
            );
        }
        r.link_read(Some(0.3), Some(800_000), at(start, 100));
        assert_eq!(
            r.backlogged(900_000, 1_375_000, queued, Some(0.0), at(start, 200)),
            None,
            "the peer's own packets are lost"
        );
        assert_eq!(
            r.backlogged(900_000, 1_375_000, queued, Some(0.0), at(start, 800)),
            Some(Reset::Lift(1_375_000))
        );
        r.estimator_reset();
        assert_eq!(
            r.loss(Some(0.2), at(start, 1_500)),
            Some(Reset::Undo(800_000)),
            "loss soon after: the link could not carry the layers"
        );
        assert_eq!(
            r.backlogged(900_000, 1_375_000, queued, Some(0.0), at(start, 9_000)),
            None,
            "ended"
        );
    }

    #[test]
    fn loss_long_after_a_restart_undoes_nothing() {
        let start = Instant::now();
        let mut r = restarted(start);
        assert_eq!(r.loss(Some(0.3), at(start, 8_000)), None);
        r.estimate(2_000_000, false, None, at(start, 20_000));
        assert!(
            r.estimate(600_000, false, Some(0.0), at(start, 20_200))
                .is_some()
        );
    }

    /// The estimates of a 600 kbit/s link after a lossy spell (picture bench, 2026-12-06),
    /// under a floor of 250 kbit/s: lifted while the link loses nothing, at most every 2 s;
    /// not while it loses, nor with no fresh reading of its loss.
    #[test]
    fn an_estimate_under_the_lowest_layers_on_a_link_that_loses_nothing_is_lifted() {
        let start = Instant::now();
        let floor = 250_000;
        let mut r = Recovery::default();
        assert_eq!(r.starved(584_669, floor, Some(0.62), at(start, 0)), None);
        assert_eq!(
            r.starved(166_415, floor, Some(0.3), at(start, 1_900)),
            None,
            "lossy"
        );
        assert_eq!(
            r.starved(166_415, floor, None, at(start, 1_950)),
            None,
            "unknown"
        );
        assert_eq!(
            r.starved(166_415, floor, Some(0.0), at(start, 2_000)),
            Some(Reset::Floor(floor))
        );
        assert_eq!(r.starved(123_390, floor, Some(0.0), at(start, 3_000)), None);
        assert_eq!(
            r.starved(113_660, floor, Some(0.01), at(start, 4_000)),
            Some(Reset::Floor(floor))
        );
        assert_eq!(r.starved(300_000, floor, Some(0.0), at(start, 7_000)), None);
    }

    /// Picture bench run 39: after a lossy spell the estimator held 416,960 bit/s for 40 s on
    /// a freed link, under the 0.7 Mbit/s the middle layer needs.
    #[test]
    fn an_estimate_stuck_under_a_move_up_on_a_link_that_loses_nothing_is_measured_again() {
        let start = Instant::now();
        let up = Some(700_000);
        let mut r = Recovery::default();
        let stuck = 416_960;
        for ms in (0..STAGNANT_FOR.as_millis() as u64).step_by(250) {
            assert_eq!(
                stagnant(&mut r, (stuck, up, Some(0.0), false), at(start, ms)),
                None
            );
        }
        assert_eq!(
            stagnant(&mut r, (stuck, up, Some(0.0), false), at(start, 4_000)),
            Some(Reset::Reprobe(stuck))
        );
        // Still stuck after the measurement: not again before the spacing is over.
        let next = 4_000 + REPROBE_AT_MOST_EVERY.as_millis() as u64;
        for ms in (4_250..next).step_by(250) {
            assert_eq!(
                stagnant(&mut r, (stuck, up, Some(0.0), false), at(start, ms)),
                None
            );
        }
        // From the estimator's own estimate where that is lower.
        r.link_read(Some(0.0), Some(390_000), at(start, next));
        assert_eq!(
            stagnant(&mut r, (stuck, up, Some(0.0), false), at(start, next)),
            Some(Reset::Reprobe(390_000))
        );
    }

    #[test]
    fn an_estimate_that_grows_fits_the_move_up_or_sees_loss_is_left_alone() {
        const UP: Option<u64> = Some(700_000);
        const CLEAN: Option<f32> = Some(0.0);
        let (start, up, clean) = (Instant::now(), UP, CLEAN);
        // At a time in ms: the estimate, what a move up needs, the loss, whether the link is full.
        type Reading = fn(u64) -> (u64, Option<u64>, Option<f32>, bool);
        let cases: [(&str, Reading); 6] = [
            // 50% more in the first 4 s: at that pace, there in another 4.
            ("growing", |ms| (400_000 + 50 * ms, UP, CLEAN, false)),
            ("every video at its best", |_| (400_000, None, CLEAN, false)),
            ("enough for the move up", |_| (700_000, UP, CLEAN, false)),
            ("loss reported", |_| (400_000, UP, Some(0.05), false)),
            ("loss unknown", |_| (400_000, UP, None, false)),
            ("the link holds back", |_| (400_000, UP, CLEAN, true)),
        ];
        for (case, reading) in cases {
            let mut r = Recovery::default();
            for ms in (0..12_000).step_by(250) {
                let (bps, up, loss, full) = reading(ms);
                assert_eq!(
                    stagnant(&mut r, (bps, up, loss, full), at(start, ms)),
                    None,
                    "{case}"
                );
            }
        }
        // The peer's own packets to the node are lost: the link is limited both ways.
        let mut r = Recovery::default();
        for ms in (0..12_000).step_by(250) {
            r.link_read(Some(0.1), Some(400_000), at(start, ms));
            assert_eq!(
                stagnant(&mut r, (400_000, up, clean, false), at(start, ms)),
                None
            );
        }
        // A spell of loss starts the wait again.
        let mut r = Recovery::default();
        assert_eq!(
            stagnant(&mut r, (400_000, up, clean, false), at(start, 0)),
            None
        );
        assert_eq!(
            stagnant(&mut r, (400_000, up, Some(0.1), false), at(start, 3_000)),
            None
        );
        assert_eq!(
            stagnant(&mut r, (400_000, up, clean, false), at(start, 3_250)),
            None
        );
        assert_eq!(
            stagnant(&mut r, (400_000, up, clean, false), at(start, 7_000)),
            None
        );
        assert!(stagnant(&mut r, (400_000, up, clean, false), at(start, 7_250)).is_some());
    }

    /// The Chromium test's slow way-backs after a 600 kbit/s limit was lifted (2026-12-07
    /// traces): the estimate grew by itself, 0.73 to 0.94 Mbit/s in 4 s, too slowly to reach
    /// the top layer's move up (1.3 Mbit/s) within another 4 s: measured again then, not after
    /// it stops growing.
    #[test]
    fn an_estimate_growing_too_slowly_to_reach_the_move_up_soon_is_measured_again() {
        let start = Instant::now();
        let up = Some(1_300_000);
        let mut r = Recovery::default();
        // 52,650 bit/s more a second: 731,581 at 0 s, 942,181 at 4 s.
        let growing = |ms: u64| 731_581 + ms * 52_650 / 1_000;
        for ms in (0..4_000).step_by(250) {
            let bps = growing(ms);
            assert_eq!(
                stagnant(&mut r, (bps, up, Some(0.0), false), at(start, ms)),
                None
            );
        }
        assert_eq!(
            stagnant(
                &mut r,
                (growing(4_000), up, Some(0.0), false),
                at(start, 4_000)
            ),
            Some(Reset::Reprobe(942_181))
        );
        // From 0.8 to 1.1 Mbit/s in 4 s: there in another 4.
        let mut r = Recovery::default();
        let fast = |ms: u64| 800_000 + ms * 75;
        for ms in (0..=4_000).step_by(250) {
            assert_eq!(
                stagnant(&mut r, (fast(ms), up, Some(0.0), false), at(start, ms)),
                None
            );
        }
    }

    #[test]
    fn a_subscriber_waiting_for_a_move_up_on_a_clean_link_has_it_probed_every_1_5_s() {
        let start = Instant::now();
        let up = Some(1_300_000);
        let mut r = Recovery::default();
        let asked: Vec<u64> = (0..=4_000)
            .step_by(250)
            .filter(|&ms| probe_up(&mut r, (700_000, up, Some(0.0), false), at(start, ms)))
            .collect();
        assert_eq!(asked, [0, 1_500, 3_000]);
        // Not at the top, nor on a link that loses, holds back or loses the peer's packets.
        let later = at(start, 10_000);
        assert!(!probe_up(&mut r, (700_000, None, Some(0.0), false), later));
        assert!(!probe_up(&mut r, (700_000, up, Some(0.05), false), later));
        assert!(!probe_up(&mut r, (700_000, up, Some(0.0), true), later));
        assert!(!probe_up(&mut r, (700_000, up, None, false), later));
        r.link_read(Some(0.1), None, later);
        assert!(!probe_up(&mut r, (700_000, up, Some(0.0), false), later));
        // Nor once the estimator's own estimate reached the move up: it waits for its hold.
        let mut r = Recovery::default();
        r.link_read(Some(0.0), Some(1_400_000), start);
        assert!(!probe_up(&mut r, (700_000, up, Some(0.0), false), start));
        assert!(probe_up(
            &mut r,
            (1_350_000, Some(1_500_000), Some(0.0), false),
            start
        ));
    }

    /// The Chromium trace in `Recovery::stagnant`'s comment: the reported average under the
    /// move up, the estimator's own over it.
    #[test]
    fn an_estimate_the_estimator_measured_over_the_move_up_is_not_measured_again() {
        let start = Instant::now();
        let up = Some(1_329_692);
        let mut r = Recovery::default();
        r.link_read(Some(0.0), Some(2_490_577), at(start, 0));
        for ms in (0..12_000).step_by(250) {
            assert_eq!(
                stagnant(&mut r, (1_062_553, up, Some(0.0), false), at(start, ms)),
                None
            );
        }
        // Its own estimate falls under the move up: the wait starts then.
        r.link_read(Some(0.0), Some(1_000_000), at(start, 12_000));
        for ms in (12_000..16_000).step_by(250) {
            assert_eq!(
                stagnant(&mut r, (1_062_553, up, Some(0.0), false), at(start, ms)),
                None
            );
        }
        assert_eq!(
            stagnant(&mut r, (1_062_553, up, Some(0.0), false), at(start, 16_000)),
            Some(Reset::Reprobe(1_000_000))
        );
    }

    /// A measurement's probe may fit in the link's buffer and read it as faster than it is;
    /// the fall that follows is that reading undone, not a stalled receiver's collapse.
    #[test]
    fn a_fall_soon_after_a_stagnant_estimate_was_measured_again_restarts_nothing() {
        let start = Instant::now();
        let mut r = Recovery::default();
        r.estimate(400_000, false, Some(0.0), at(start, 0));
        for ms in (0..=4_000).step_by(250) {
            stagnant(
                &mut r,
                (400_000, Some(700_000), Some(0.0), false),
                at(start, ms),
            );
        }
        r.estimate(400_000, false, Some(0.0), at(start, 4_000));
        r.estimate(2_100_000, false, Some(0.0), at(start, 4_300));
        assert_eq!(
            r.estimate(600_000, false, Some(0.0), at(start, 4_800)),
            None
        );
        // Later, a collapse is one again.
        r.estimate(2_100_000, false, Some(0.0), at(start, 9_500));
        assert!(
            r.estimate(600_000, false, Some(0.0), at(start, 9_800))
                .is_some()
        );
    }

    #[test]
    fn a_slow_decline_or_an_old_high_is_no_collapse() {
        let start = Instant::now();
        let mut r = Recovery::default();
        r.estimate(2_500_000, false, None, at(start, 0));
        r.estimate(2_000_000, false, None, at(start, 100));
        assert_eq!(r.estimate(1_300_000, false, None, at(start, 300)), None);
        // 2 Mbit/s over five seconds ago is no longer recent: the 1.3 Mbit/s that held since
        // is the reference.
        assert_eq!(r.estimate(900_000, false, None, at(start, 5_200)), None);
        assert_eq!(r.estimate(800_000, false, None, at(start, 5_300)), None);
    }

    /// The Chromium test's clean call (2026-12-07): 2.04 Mbit/s held for 6 s, reported once,
    /// then 0.9 within a moment: a collapse.
    #[test]
    fn an_estimate_that_held_for_seconds_is_the_reference_for_the_next() {
        let start = Instant::now();
        let mut r = Recovery::default();
        r.estimate(2_500_000, false, None, at(start, 0));
        r.estimate(2_200_000, false, None, at(start, 170));
        r.estimate(2_040_000, false, None, at(start, 3_850));
        assert_eq!(
            r.estimate(900_000, false, Some(0.0), at(start, 9_900)),
            Some(Reset::Restart(1_734_000))
        );
    }
}
