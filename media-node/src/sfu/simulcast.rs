//! Simulcast layer choice: pure, so it is tested without a network.
//!
//! A publisher sends up to three encodings of its camera (rids, low to high). Each subscriber
//! gets the best layer that fits its share of the bandwidth estimate; a switch takes effect at
//! the target layer's next keyframe so the decoder never sees a broken frame.
//!
//! The choice holds steady: a subscriber moves down as soon as its share falls clearly below
//! its layer's rate ([`KEEP_ABOVE`]: not on the single overuse step a busy receiver's jitter
//! gives) or its link loses or holds back what the node sends (`congestion.rs`; then it leaves
//! a layer as soon as the layer no longer fits), before its picture freezes; and once it had
//! to, up again only after the
//! higher layer has fitted with headroom for [`UP_HOLD`]; an estimate that wobbles around a
//! layer's rate keeps the layer it has instead of switching every second. Until the first move
//! down, a move up is at once: at the start of a call the higher layers are measured a moment
//! after the lowest, and the picture should be sharp from the first seconds.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use str0m::media::Rid;

/// The most layers a browser sends.
pub const MAX_LAYERS: usize = 3;
/// Headroom kept below the estimate so a layer is not chosen on the edge of congestion.
const HEADROOM: f64 = 0.85;
/// A layer is left for the estimate alone only once the subscriber's share falls below this
/// part of the layer's rate. One overuse signal sets str0m's estimate (as libwebrtc's) to 85%
/// of the rate the receiver acknowledged, which is below the rate of a layer that fills the
/// link as it should: a browser's encoder would lower its rate by 15%, an SFU can only switch
/// to a layer a third the size. A queue that is no bottleneck (a busy receiver's jitter) gives
/// one such step, again and again; a link that carries less brings the acknowledged rate, and
/// so the estimate, further down (and its loss and backlog cap the choice at once,
/// `congestion.rs`).
const KEEP_ABOVE: f64 = 0.8;
/// On a full link, the part of what it delivered a layer moved to may take. The link still
/// owes the queue of the layer left (a tail-drop buffer holds a few hundred ms of it), the
/// resends of what it lost, and the new layer's keyframe, several frames' worth at once: a
/// middle layer chosen at [`HEADROOM`] of a 600 kbit/s link lost its keyframe again and again,
/// and the picture stayed frozen 0.8 s more until the lowest layer came (Chromium trace,
/// 2026-12-06). A layer that fits stays at [`HEADROOM`].
const FULL_LINK_HEADROOM: f64 = 0.6;
const WINDOW: Duration = Duration::from_secs(1);
/// No packet of a layer for this long: its publisher stopped sending it (a browser drops its
/// higher layers when its own uplink shrinks), and subscribers on it move to one still sent.
/// Well above a frame's interval at the lowest frame rates browsers send a camera at.
pub const GONE_AFTER: Duration = Duration::from_millis(500);
/// How long a higher layer must keep fitting before a subscriber moves up to it.
pub const UP_HOLD: Duration = Duration::from_secs(2);
/// A move up followed by a move down within this failed: the link could not carry the layer
/// (an estimate grown on a probe that fit in the link's buffer, picture bench and engine
/// test). A move up that lasts this long clears the failures.
pub const UP_PROVEN: Duration = Duration::from_secs(10);
/// A move down this soon after the node measured the subscriber's link is not a failed move
/// up: the measurement's start-up probes (3 and 6 times the estimate) fill the link for a
/// moment, and the loss they cause shows in the statistics of the next one or two seconds.
/// Counted, a measurement 2 s before a 600 kbit/s limit was lifted moved the patient down from
/// the middle layer, which the link had carried without loss for 4 s, doubled its next hold to
/// 4 s, and the top layer came 11.3 s after the link was freed (Chromium test trace,
/// 2026-12-07).
pub const MEASURING_FOR: Duration = Duration::from_secs(3);
/// Each failed move up doubles the hold before the next, up to this: a patient on a weak link
/// for a whole visit saw the picture stall on a failed try every 9-10 s (engine test). Longer,
/// a link that is freed after a few failed tries would wait as long for its top layer.
pub const UP_HOLD_AT_MOST: Duration = Duration::from_secs(16);
/// What a 720p camera's top layer needs: where each estimate starts, and what a subscriber
/// showing a full-size tile is probed for before the publisher's top layer exists.
pub const TOP_LAYER_BPS: u64 = 2_500_000;

/// Incoming bitrate of one layer, measured over one-second windows.
#[derive(Debug, Clone)]
pub struct LayerRate {
    pub rid: Rid,
    bytes_in_window: u64,
    window_start: Instant,
    last_packet: Instant,
    /// Bits per second over the last full window; 0 until one is measured, and again once the
    /// layer is gone.
    pub bps: u64,
}

impl LayerRate {
    pub fn new(rid: Rid, now: Instant) -> Self {
        Self {
            rid,
            bytes_in_window: 0,
            window_start: now,
            last_packet: now,
            bps: 0,
        }
    }

    pub fn record(&mut self, bytes: usize, now: Instant) {
        if self.gone(now) {
            // Back after a pause: measured afresh, not averaged over the gap.
            self.bytes_in_window = 0;
            self.window_start = now;
        }
        self.last_packet = now;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            self.bps = self.bytes_in_window * 8 * 1000 / (elapsed.as_millis().max(1) as u64);
            self.bytes_in_window = 0;
            self.window_start = now;
        }
        self.bytes_in_window += bytes as u64;
    }

    /// Forgets the rate of a layer that stopped coming.
    pub fn expire(&mut self, now: Instant) {
        if self.gone(now) {
            self.bps = 0;
        }
    }

    fn gone(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_packet) >= GONE_AFTER
    }
}

/// The layers a publisher has sent so far, in the order they appear in its offer (browsers list
/// them low to high when the client sets them up that way; the rate decides in any case).
#[derive(Debug, Clone, Default)]
pub struct Layers {
    rates: Vec<LayerRate>,
}

impl Layers {
    pub fn record(&mut self, rid: Rid, bytes: usize, now: Instant) {
        if let Some(rate) = self.rates.iter_mut().find(|r| r.rid == rid) {
            rate.record(bytes, now);
        } else if self.rates.len() < MAX_LAYERS {
            let mut rate = LayerRate::new(rid, now);
            rate.record(bytes, now);
            self.rates.push(rate);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// Forgets the rates of the layers that stopped coming ([`GONE_AFTER`]).
    pub fn expire(&mut self, now: Instant) {
        for rate in &mut self.rates {
            rate.expire(now);
        }
    }

    /// The highest-rate layer whose rate fits `budget_bps`; the lowest one when none fits.
    /// Layers not yet measured count as fitting only when nothing is measured.
    pub fn choose(&self, budget_bps: u64) -> Option<Rid> {
        self.choose_within(budget_bps, HEADROOM)
    }

    fn choose_within(&self, budget_bps: u64, headroom: f64) -> Option<Rid> {
        let budget = (budget_bps as f64 * headroom) as u64;
        let mut by_rate: Vec<&LayerRate> = self.rates.iter().collect();
        by_rate.sort_by_key(|r| r.bps);
        let lowest = by_rate
            .iter()
            .find(|r| r.bps > 0)
            .or(by_rate.first())
            .map(|r| r.rid);
        by_rate
            .iter()
            .rev()
            .find(|r| r.bps > 0 && r.bps <= budget)
            .map(|r| r.rid)
            .or(lowest)
    }

    /// Where a subscriber now aiming at `target` should go, given its share of the estimate.
    pub fn aim(&self, target: Option<Rid>, share_bps: u64) -> Aim {
        self.aim_keeping_above(target, share_bps, HEADROOM, KEEP_ABOVE)
    }

    /// The same on a link that is full now (it loses what the node sends, or its send queue
    /// holds it back): no band to stay in, as the estimate's dip is real. Kept in the band,
    /// a subscriber sat on a layer its link could not carry, its frames lost and its picture
    /// frozen for seconds (picture bench, 2026-12-05). A layer it moves to must fit
    /// [`FULL_LINK_HEADROOM`] of the share.
    pub fn aim_on_full_link(&self, target: Option<Rid>, share_bps: u64) -> Aim {
        self.aim_keeping_above(target, share_bps, FULL_LINK_HEADROOM, 1.0 / HEADROOM)
    }

    /// `headroom`: the part of the share a layer moved to may take; `keep_above`: the part of
    /// the current layer's rate below which the share makes it move down.
    fn aim_keeping_above(
        &self,
        target: Option<Rid>,
        share_bps: u64,
        headroom: f64,
        keep_above: f64,
    ) -> Aim {
        let Some(fits) = self.choose_within(share_bps, headroom) else {
            return Aim::Stay;
        };
        let Some(target) = target else {
            return Aim::Start(fits);
        };
        let (Some(now), Some(next)) = (self.rate_of(target), self.rate_of(fits)) else {
            // The layer aimed at is gone (its publisher stopped sending it).
            return Aim::Down(fits);
        };
        if now == 0 {
            // The publisher stopped sending it: the best layer still sent, at once (no
            // congestion of this subscriber's), or nothing to do while none is.
            return if next > 0 { Aim::Gone(fits) } else { Aim::Stay };
        }
        if fits == target {
            Aim::Stay
        } else if next > now {
            Aim::Up(fits)
        } else if (now as f64 * keep_above) > share_bps as f64 {
            Aim::Down(fits)
        } else {
            // Within the headroom band: it still fits, so it stays.
            Aim::Stay
        }
    }

    /// The layers a subscriber whose tile shows only a small picture may receive: the
    /// `cap + 1` lowest by rate (0: the lowest only); all of them without a cap, or until
    /// that many are measured.
    pub fn capped(&self, cap: Option<usize>) -> Cow<'_, Layers> {
        let Some(cap) = cap else {
            return Cow::Borrowed(self);
        };
        let mut measured: Vec<LayerRate> =
            self.rates.iter().filter(|r| r.bps > 0).cloned().collect();
        if measured.len() <= cap + 1 {
            return Cow::Borrowed(self);
        }
        measured.sort_by_key(|r| r.bps);
        measured.truncate(cap + 1);
        Cow::Owned(Layers { rates: measured })
    }

    /// Every layer a browser sends is measured: the top one exists.
    pub fn complete(&self) -> bool {
        self.rates.iter().filter(|r| r.bps > 0).count() >= MAX_LAYERS
    }

    /// What a subscriber receiving these layers (after its tile's cap) should have its
    /// estimate probed for. A full-size tile asks for the top layer before the publisher sends
    /// it (its layers start as its own estimate grows): an estimate that grew only with the
    /// lower layers would hold the top one back for seconds once it comes. Not once the top
    /// layer is there (its rate is what to probe for), nor once the subscriber's link was
    /// congested (probing would take from the media).
    pub fn wanted_bps(&self, cap: Option<usize>, congested: bool) -> u64 {
        match (cap, congested, self.complete()) {
            (None, false, false) => self.top_bps().max(TOP_LAYER_BPS),
            _ => self.top_bps(),
        }
    }

    /// What a subscriber aiming at `target` should keep its link busy with (str0m pads up to
    /// it, never past the estimate), as its selection says ([`Selection::padding`]):
    /// - [`Pad::Grow`]: the next layer's rate, so that its estimate can grow into that layer
    ///   while the media alone does not fill it. A thumbnail grown to full size, or a call
    ///   whose higher layers came after the estimate settled, would otherwise wait for the
    ///   estimator's occasional probes, which its congestion state may hold back for tens of
    ///   seconds.
    /// - [`Pad::Prove`]: what the move up to the layer it waits for relies on, that layer's
    ///   rate over the headroom (the next layer's while that one is not measured): on a link
    ///   that cannot carry it the padding shows loss or a queue before the switch rather than
    ///   after, and the subscriber stays where its picture plays.
    /// - [`Pad::Off`]: nothing (padding would take from the media of a congested link).
    ///
    /// 0 at the top (nothing to grow into: padding would be waste).
    pub fn sustain_bps(&self, target: Option<Rid>, pad: Pad) -> u64 {
        let now = self.carried_bps(target);
        let next = self.next_bps(target).unwrap_or(0);
        match pad {
            Pad::Grow => next,
            Pad::Prove(rid) => {
                let up = self.rate_of(rid).filter(|bps| *bps > now).unwrap_or(next);
                (up as f64 / HEADROOM) as u64
            }
            Pad::Off => 0,
        }
    }

    /// The share of a subscriber's estimate at which the layer just above `target` fits
    /// ([`Layers::choose`]): what a move up waits for; `None` at the top, or while no higher
    /// layer is being sent.
    pub fn up_bps(&self, target: Option<Rid>) -> Option<u64> {
        self.next_bps(target).map(share_fitting)
    }

    /// The rate of the layer just above `target` (the lowest layer's without one).
    fn next_bps(&self, target: Option<Rid>) -> Option<u64> {
        let now = self.carried_bps(target);
        self.rates
            .iter()
            .map(|r| r.bps)
            .filter(|bps| *bps > now)
            .min()
    }

    /// The share of a subscriber's estimate at which the best layer it may receive (after
    /// its tile's cap) fits: more would lie unused, so [`fair_shares`] gives it to the others.
    pub fn need_bps(&self, cap: Option<usize>, congested: bool) -> u64 {
        share_fitting(self.wanted_bps(cap, congested))
    }

    fn rate_of(&self, rid: Rid) -> Option<u64> {
        self.rates.iter().find(|r| r.rid == rid).map(|r| r.bps)
    }

    /// The media rate of the layer a subscriber aiming at `target` receives (0 without one,
    /// or once it is gone).
    pub fn carried_bps(&self, target: Option<Rid>) -> u64 {
        target.and_then(|rid| self.rate_of(rid)).unwrap_or(0)
    }

    /// The rate of the lowest layer being sent: the least a subscriber receiving this track
    /// can be sent without pausing it.
    pub fn lowest_bps(&self) -> u64 {
        self.rates
            .iter()
            .map(|r| r.bps)
            .filter(|bps| *bps > 0)
            .min()
            .unwrap_or(0)
    }

    /// The rate of the best layer: what a subscriber would like to receive.
    pub fn top_bps(&self) -> u64 {
        self.rates.iter().map(|r| r.bps).max().unwrap_or(0)
    }
}

/// The least share in which a layer of `bps` fits with [`HEADROOM`]: one more than the
/// quotient, as [`Layers::choose`] multiplies back and rounds down.
fn share_fitting(bps: u64) -> u64 {
    (bps as f64 / HEADROOM).ceil() as u64 + 1
}

/// A subscriber's estimate split over the video it receives, each track needing at most
/// `needs[i]` ([`Layers::need_bps`]): one that needs less than an equal part gets what it
/// needs, and what it leaves goes to the others in equal parts (max-min fairness). An equal
/// split would hold a visit's clinician below the top layer of one participant whenever
/// another sends only a small picture (a patient on a slow uplink, a thumbnail).
pub fn fair_shares(budget_bps: u64, needs: &[u64]) -> Vec<u64> {
    let mut smallest_first: Vec<usize> = (0..needs.len()).collect();
    smallest_first.sort_by_key(|&i| needs[i]);
    let mut shares = vec![0; needs.len()];
    let mut left = budget_bps;
    for (served, &i) in smallest_first.iter().enumerate() {
        let equal = left / (needs.len() - served) as u64;
        shares[i] = needs[i].min(equal);
        left -= shares[i];
    }
    shares
}

/// How a subscriber's link is padded towards its next layer ([`Layers::sustain_bps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    /// Never congested: up to the next layer's rate, to grow the estimate into it.
    Grow,
    /// Congested once, and this higher layer fits its estimate now: up to what the move up
    /// to it relies on, to prove the link carries it before the switch.
    Prove(Rid),
    /// Congested: none.
    Off,
}

/// What [`Layers::aim`] advises for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aim {
    Stay,
    /// The first layer, at once.
    Start(Rid),
    /// A lower layer, at once: the one aimed at no longer fits.
    Down(Rid),
    /// A higher layer fits: taken at once, or after a move down once it has kept fitting for
    /// [`UP_HOLD`].
    Up(Rid),
    /// The layer aimed at stopped coming: another one, at once, without counting as a move
    /// down (the way back up needs no hold).
    Gone(Rid),
}

/// How long a move down for bandwidth holds the old layer back while it waits for the new
/// layer's keyframe; a publisher that has not sent one by then gets the old layer forwarded
/// again rather than a frozen picture.
pub const DRAIN_AT_MOST: Duration = Duration::from_secs(1);

/// Which layer one subscriber receives of one simulcast track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    /// The layer being forwarded.
    pub current: Option<Rid>,
    /// The layer to switch to at its next keyframe.
    pub target: Option<Rid>,
    /// Since when a higher layer has kept fitting, and the one that fits now.
    up_since: Option<(Instant, Rid)>,
    /// This subscriber had to move down once: moves up wait for [`UP_HOLD`] from now on.
    moved_down: bool,
    /// When the last move up that waited for a hold was taken, until it is [`UP_PROVEN`].
    up_at: Option<Instant>,
    /// Moves up undone within [`UP_PROVEN`] since the last that held: each doubles the hold.
    failed_ups: u32,
    /// When the node last measured the subscriber's link ([`Selection::link_measured`]).
    measured_at: Option<Instant>,
    /// Since when a move down for bandwidth waits for its keyframe, the old layer no longer
    /// forwarded (for at most [`DRAIN_AT_MOST`]).
    draining: Option<Instant>,
    /// The subscriber's tile is small: at most this many layers above the lowest
    /// ([`Layers::capped`]); `None`: any.
    pub cap: Option<usize>,
}

impl Selection {
    /// Follows an aim: down, gone and start at once, up after [`Selection::up_hold`] of wanting
    /// it once a move down happened.
    pub fn steer(&mut self, aim: Aim, now: Instant) {
        if self
            .up_at
            .is_some_and(|at| now.saturating_duration_since(at) >= UP_PROVEN)
        {
            self.up_at = None;
            self.failed_ups = 0;
        }
        match aim {
            Aim::Start(rid) | Aim::Down(rid) | Aim::Gone(rid) => {
                let measuring = self
                    .measured_at
                    .is_some_and(|at| now.saturating_duration_since(at) < MEASURING_FOR);
                if matches!(aim, Aim::Down(_)) && self.up_at.take().is_some() && !measuring {
                    self.failed_ups = self.failed_ups.saturating_add(1);
                }
                self.moved_down |= matches!(aim, Aim::Down(_));
                self.draining =
                    (matches!(aim, Aim::Down(_)) && self.current != Some(rid)).then_some(now);
                self.target = Some(rid);
                self.up_since = None;
            }
            Aim::Up(rid) => {
                let since = self.up_since.map_or(now, |(since, _)| since);
                self.up_since = Some((since, rid));
                let held = now.saturating_duration_since(since) >= self.up_hold();
                if !self.moved_down || held {
                    if self.moved_down {
                        self.up_at = Some(now);
                    }
                    self.target = Some(rid);
                    self.up_since = None;
                    self.draining = None;
                }
            }
            Aim::Stay => self.up_since = None,
        }
    }

    /// The node measures the subscriber's link now (its estimator restarted to probe it): a
    /// move down within [`MEASURING_FOR`] is the probes' doing, not a failed move up.
    pub fn link_measured(&mut self, now: Instant) {
        self.measured_at = Some(now);
    }

    /// How long a higher layer must keep fitting before this subscriber, once moved down,
    /// moves up: [`UP_HOLD`], doubled for each failed move up, at most [`UP_HOLD_AT_MOST`].
    pub fn up_hold(&self) -> Duration {
        let doubled = UP_HOLD.saturating_mul(1 << self.failed_ups.min(8));
        doubled.min(UP_HOLD_AT_MOST)
    }

    /// The subscriber's tile changed size. A move down the cap forced was no congestion: once
    /// the tile grows, a higher layer that fits is taken at once, not after [`UP_HOLD`].
    /// True when the tile grew.
    pub fn set_cap(&mut self, cap: Option<usize>) -> bool {
        let grows = match (self.cap, cap) {
            (Some(_), None) => true,
            (Some(old), Some(new)) => new > old,
            (None, _) => false,
        };
        if grows {
            self.moved_down = false;
            self.up_since = None;
        }
        self.cap = cap;
        grows
    }

    /// Decides whether a packet of layer `rid` is forwarded, switching at keyframes.
    pub fn admit(&mut self, rid: Option<Rid>, keyframe: bool, now: Instant) -> bool {
        let Some(rid) = rid else {
            // Not simulcast: a single encoding is always forwarded.
            return true;
        };
        if self.target == Some(rid)
            && self.current != Some(rid)
            && (keyframe || self.current.is_none())
        {
            self.current = Some(rid);
        }
        if self.current.is_none() && self.target.is_none() {
            // Nothing chosen yet: start on the first layer that shows up.
            self.current = Some(rid);
            self.target = Some(rid);
        }
        let drained = self.draining.is_some_and(|since| {
            self.current != self.target && now.saturating_duration_since(since) < DRAIN_AT_MOST
        });
        if !drained {
            self.draining = None;
        }
        // The link is full: more of the old layer would only lengthen the send queue the new
        // layer's keyframe waits behind, and the receiver drops what precedes that keyframe.
        self.current == Some(rid) && !drained
    }

    /// A move down for bandwidth waits for its keyframe, the old layer no longer forwarded.
    pub fn draining(&self) -> bool {
        self.draining.is_some()
    }

    /// This subscriber had to move down for its bandwidth (not for its tile's size); the node
    /// reads it through [`Selection::padding`].
    #[cfg(test)]
    pub fn congested(&self) -> bool {
        self.moved_down
    }

    /// How its link is padded: once congested, only while a higher layer fits and the move
    /// up waits for its hold. An estimate that grew on a probe which fit in the link's buffer
    /// (tc's tbf lets 16 kB through at once) moved a subscriber on a 600 kbit/s link up to a
    /// layer the link could not carry, and its picture stalled (picture bench, 9-11 s in).
    pub fn padding(&self) -> Pad {
        match (self.moved_down, self.up_since) {
            (false, _) => Pad::Grow,
            (true, Some((_, rid))) => Pad::Prove(rid),
            (true, None) => Pad::Off,
        }
    }

    /// True when the switch is pending and the target layer needs a keyframe.
    pub fn wants_keyframe(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(rates: &[(&str, u64)]) -> Layers {
        let now = Instant::now();
        Layers {
            rates: rates
                .iter()
                .map(|(rid, bps)| LayerRate {
                    rid: (*rid).into(),
                    bytes_in_window: 0,
                    window_start: now,
                    last_packet: now,
                    bps: *bps,
                })
                .collect(),
        }
    }

    /// An estimate a little under the layer's rate keeps the layer on a link that is not
    /// full (a busy receiver's jitter), and leaves it on one that is.
    #[test]
    fn on_a_full_link_a_layer_that_no_longer_fits_is_left_at_once() {
        let l = layers(&[("l", 150_000), ("m", 500_000), ("h", 1_500_000)]);
        let on_m = Some(Rid::from("m"));
        assert_eq!(l.aim(on_m, 455_000), Aim::Stay);
        assert_eq!(l.aim_on_full_link(on_m, 455_000), Aim::Down("l".into()));
        assert_eq!(l.aim_on_full_link(on_m, 600_000), Aim::Stay, "it fits");
    }

    /// A subscriber on the top layer whose link fills, delivering 657 kbit/s of it (a Chromium
    /// trace of a 600 kbit/s link): the middle layer would fit the estimate's usual headroom
    /// but not what the full link still owes, so it moves to the lowest; with more delivered,
    /// to the middle one.
    #[test]
    fn on_a_full_link_a_move_down_leaves_room_for_the_queue_and_the_keyframe() {
        let l = layers(&[("l", 150_000), ("m", 500_000), ("h", 1_100_000)]);
        let on_h = Some(Rid::from("h"));
        assert_eq!(l.aim(on_h, 657_000), Aim::Down("m".into()));
        assert_eq!(l.aim_on_full_link(on_h, 657_000), Aim::Down("l".into()));
        assert_eq!(l.aim_on_full_link(on_h, 900_000), Aim::Down("m".into()));
    }

    #[test]
    fn the_best_layer_that_fits_the_estimate_is_chosen() {
        let l = layers(&[("l", 150_000), ("m", 500_000), ("h", 1_500_000)]);
        assert_eq!(l.choose(3_000_000), Some("h".into()));
        assert_eq!(l.choose(1_000_000), Some("m".into()));
        assert_eq!(l.choose(300_000), Some("l".into()));
        // Nothing fits: the lowest layer still flows (video degrades, it does not freeze).
        assert_eq!(l.choose(10_000), Some("l".into()));
    }

    /// A small tile gets no larger picture than it shows, however large the estimate: the
    /// lowest layer for a thumbnail, the middle one for a medium tile; a subscriber on the top
    /// layer moves down at once when its tile shrinks. Layers listed in any order.
    #[test]
    fn a_small_tile_caps_the_layer_however_large_the_estimate() {
        let l = layers(&[("h", 1_500_000), ("l", 150_000), ("m", 500_000)]);
        let plenty = 10_000_000;
        assert_eq!(l.capped(Some(0)).aim(None, plenty), Aim::Start("l".into()));
        assert_eq!(l.capped(Some(1)).aim(None, plenty), Aim::Start("m".into()));
        assert_eq!(l.capped(None).aim(None, plenty), Aim::Start("h".into()));
        assert_eq!(
            l.capped(Some(1)).aim(Some("h".into()), plenty),
            Aim::Down("m".into())
        );
        assert_eq!(l.capped(Some(1)).top_bps(), 500_000);
        // The estimate still rules below the cap.
        assert_eq!(l.capped(Some(1)).aim(None, 200_000), Aim::Start("l".into()));
        // The tile shrinks then grows: the move down was the cap's, so the way up is at once.
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut s = Selection::default();
        s.steer(l.aim(None, plenty), at(0));
        s.set_cap(Some(0));
        s.steer(l.capped(s.cap).aim(s.target, plenty), at(1));
        assert_eq!(s.target, Some("l".into()));
        s.set_cap(None);
        s.steer(l.capped(s.cap).aim(s.target, plenty), at(2));
        assert_eq!(
            s.target,
            Some("h".into()),
            "no hold after the cap's move down"
        );
        // Until the layers are measured, nothing is capped (the lowest flows first anyway).
        let unmeasured = layers(&[("h", 0), ("l", 150_000), ("m", 0)]);
        assert_eq!(unmeasured.capped(Some(0)).top_bps(), 150_000);
    }

    /// A subscriber keeps its link busy up to the layer above its own, so its estimate can grow
    /// into it; at the top, or once its link was congested, no padding is asked for; a
    /// thumbnail's cap makes the lowest layer the top.
    #[test]
    fn a_subscriber_is_padded_up_to_the_next_layer_unless_its_link_was_congested() {
        let l = layers(&[("h", 1_500_000), ("l", 150_000), ("m", 500_000)]);
        assert_eq!(l.sustain_bps(Some("l".into()), Pad::Grow), 500_000);
        assert_eq!(l.sustain_bps(Some("m".into()), Pad::Grow), 1_500_000);
        assert_eq!(l.sustain_bps(Some("h".into()), Pad::Grow), 0, "the top");
        assert_eq!(
            l.sustain_bps(None, Pad::Grow),
            150_000,
            "before the first layer"
        );
        assert_eq!(l.sustain_bps(Some("m".into()), Pad::Off), 0, "congested");
        assert_eq!(
            l.sustain_bps(Some("m".into()), Pad::Prove("h".into())),
            1_764_705,
            "congested, and the top layer fits: what the move up relies on"
        );
        assert_eq!(
            l.sustain_bps(Some("l".into()), Pad::Prove("h".into())),
            1_764_705,
            "the top layer, not the middle one, when the move up skips it"
        );
        assert_eq!(
            l.capped(Some(0)).sustain_bps(Some("l".into()), Pad::Grow),
            0
        );
        // The tile grows again: the next layer is what to grow into.
        assert_eq!(
            l.capped(None).sustain_bps(Some("l".into()), Pad::Grow),
            500_000
        );
    }

    /// What a move up waits for is the share in which the next layer fits: `choose` takes
    /// that layer at that share, and not under it (but for the rounding).
    #[test]
    fn a_move_up_waits_for_the_share_the_next_layer_fits_in() {
        let l = layers(&[("h", 1_500_000), ("l", 150_000), ("m", 500_000)]);
        let up = l.up_bps(Some("l".into())).expect("a layer above");
        assert_eq!(l.choose(up), Some("m".into()));
        assert_eq!(l.choose(up - 2), Some("l".into()));
        assert_eq!(l.up_bps(Some("h".into())), None, "the top");
        assert_eq!(
            l.capped(Some(0)).up_bps(Some("l".into())),
            None,
            "a thumbnail"
        );
        // The publisher stopped sending the layers above: nothing to move up to.
        let paused = layers(&[("h", 0), ("l", 150_000), ("m", 0)]);
        assert_eq!(paused.up_bps(Some("l".into())), None);
    }

    /// Two tracks sharing an estimate of 3.1 Mbit/s: one whose publisher sends only a small
    /// picture takes what that needs and the other gets the rest, enough for its top layer;
    /// two that each want more than half share equally; what nobody needs is left over.
    #[test]
    fn what_one_track_does_not_need_goes_to_the_others() {
        let top = layers(&[("l", 150_000), ("m", 500_000), ("h", 2_500_000)]);
        let small = layers(&[("l", 150_000)]);
        let needs = [small.need_bps(None, true), top.need_bps(None, false)];
        let estimate = needs[0] + needs[1];
        assert_eq!(fair_shares(estimate, &needs), needs);
        assert_eq!(top.aim(None, needs[1]), Aim::Start("h".into()));
        assert_eq!(
            top.aim(None, estimate / 2),
            Aim::Start("m".into()),
            "an equal split would not fit it"
        );
        assert_eq!(
            fair_shares(4_000_000, &[3_000_000, 5_000_000]),
            [2_000_000, 2_000_000]
        );
        assert_eq!(
            fair_shares(4_000_000, &[500_000, 1_000_000, 9_000_000]),
            [500_000, 1_000_000, 2_500_000]
        );
        assert_eq!(fair_shares(10_000_000, &[1, 2]), [1, 2]);
        assert!(fair_shares(1_000_000, &[]).is_empty());
        // A share of exactly the need fits the top layer, whatever its rate's rounding.
        for top_bps in (1_000_000..1_000_200).chain([17, 2_500_000, 1_234_567]) {
            let l = layers(&[("l", 10), ("h", top_bps)]);
            assert_eq!(l.choose(l.need_bps(None, true)), Some("h".into()));
        }
    }

    /// An estimate that wobbles around the top layer's rate (as a clean link's does) keeps the
    /// layer; a real drop moves down at once; a recovered link moves up after UP_HOLD.
    #[test]
    fn the_choice_holds_steady_on_a_wobbling_estimate_and_moves_down_at_once() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut s = Selection::default();
        let first = layers(&[("l", 150_000), ("m", 0), ("h", 0)]);
        s.steer(first.aim(s.target, 3_000_000), at(0));
        assert_eq!(
            s.target,
            Some("l".into()),
            "only the lowest is measured yet"
        );
        let l = layers(&[("l", 150_000), ("m", 500_000), ("h", 1_500_000)]);
        s.steer(l.aim(s.target, 3_000_000), at(0));
        assert_eq!(
            s.target,
            Some("h".into()),
            "up at once at the start of a call"
        );
        let mut changes = 0;
        for second in 1..60 {
            // 1.6 and 2.0 Mbit/s in turn: with headroom h fits only the higher; it fits both.
            let share = if second % 2 == 0 {
                2_000_000
            } else {
                1_600_000
            };
            let before = s.target;
            s.steer(l.aim(s.target, share), at(second));
            changes += usize::from(before != s.target);
        }
        assert_eq!(changes, 0, "no layer change in a minute of wobble");

        s.steer(l.aim(s.target, 400_000), at(60));
        assert_eq!(s.target, Some("l".into()), "a drop moves down at once");
        for second in 61..63 {
            // Alternating: the higher layer does not fit for a whole UP_HOLD.
            let share = if second % 2 == 0 { 3_000_000 } else { 400_000 };
            s.steer(l.aim(s.target, share), at(second));
        }
        assert_eq!(s.target, Some("l".into()));
        for second in 63..66 {
            s.steer(l.aim(s.target, 3_000_000), at(second));
        }
        assert_eq!(s.target, Some("h".into()), "up after UP_HOLD of headroom");
    }

    /// Two layers, 150 kbit/s and 1.5 Mbit/s, and a subscriber that started on the top one and
    /// moved down for bandwidth 1 s after `start`.
    fn moved_down(start: Instant) -> (Layers, Selection) {
        let l = layers(&[("l", 150_000), ("h", 1_500_000)]);
        let mut s = Selection::default();
        s.steer(l.aim(None, 3_000_000), start);
        s.steer(l.aim(s.target, 400_000), start + Duration::from_secs(1));
        (l, s)
    }

    /// After a move down for bandwidth, a move up the link cannot carry (undone within
    /// UP_PROVEN) doubles the hold before the next try; a move up that holds clears it.
    #[test]
    fn each_failed_move_up_doubles_the_wait_for_the_next_and_one_that_holds_clears_it() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let (l, mut s) = moved_down(start);
        assert_eq!(s.target, Some("l".into()), "down for bandwidth");
        // Up once the top layer has fitted for the hold: the hold is, in turn, 2, 4, 8, 16, 16 s.
        let mut now = 1_000;
        for hold in [2_000, 4_000, 8_000, 16_000, 16_000] {
            assert_eq!(s.up_hold(), Duration::from_millis(hold));
            s.steer(l.aim(s.target, 3_000_000), at(now));
            s.steer(l.aim(s.target, 3_000_000), at(now + hold - 1));
            assert_eq!(s.target, Some("l".into()), "not before {hold} ms");
            s.steer(l.aim(s.target, 3_000_000), at(now + hold));
            assert_eq!(s.target, Some("h".into()), "up after {hold} ms");
            // The link cannot carry it: down again a second later.
            now += hold + 1_000;
            s.steer(l.aim(s.target, 400_000), at(now));
            assert_eq!(s.target, Some("l".into()));
        }
        s.steer(l.aim(s.target, 3_000_000), at(now));
        s.steer(l.aim(s.target, 3_000_000), at(now + 16_000));
        assert_eq!(s.target, Some("h".into()));
        // This one holds for UP_PROVEN: the next move down starts from UP_HOLD again.
        now += 16_000 + UP_PROVEN.as_millis() as u64;
        s.steer(l.aim(s.target, 3_000_000), at(now));
        s.steer(l.aim(s.target, 400_000), at(now + 1));
        assert_eq!(s.target, Some("l".into()));
        assert_eq!(
            s.up_hold(),
            UP_HOLD,
            "a move up that held clears the failures"
        );
    }

    /// A move down right after the node measured the link (its probes' loss) leaves the next
    /// hold as it was; a move down later still counts.
    #[test]
    fn a_move_down_while_the_node_measures_the_link_is_no_failed_move_up() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let (l, mut s) = moved_down(start);
        s.steer(l.aim(s.target, 3_000_000), at(2_000));
        s.steer(l.aim(s.target, 3_000_000), at(4_000));
        assert_eq!(s.target, Some("h".into()));
        s.link_measured(at(6_000));
        s.steer(l.aim(s.target, 400_000), at(8_000));
        assert_eq!(s.target, Some("l".into()));
        assert_eq!(s.up_hold(), UP_HOLD, "the probes' loss");
        s.steer(l.aim(s.target, 3_000_000), at(9_000));
        s.steer(l.aim(s.target, 3_000_000), at(11_000));
        assert_eq!(s.target, Some("h".into()));
        s.steer(l.aim(s.target, 400_000), at(12_000));
        assert_eq!(s.up_hold(), UP_HOLD * 2, "3 s on: the layer's own failure");
    }

    /// A subscriber on a 1.5 Mbit/s layer: one overuse signal puts its estimate at 85% of the
    /// acknowledged 1.58 Mbit/s (the layer and its headers), 1.34 Mbit/s, again and again on a
    /// busy receiver; the layer stays. A link that carries only 1.2 Mbit/s brings the estimate
    /// to about 1.0 Mbit/s: down.
    #[test]
    fn one_overuse_signal_keeps_the_layer_and_a_link_that_carries_less_moves_it_down() {
        let now = Instant::now();
        let l = layers(&[("l", 150_000), ("m", 500_000), ("h", 1_500_000)]);
        let mut s = Selection::default();
        s.steer(l.aim(None, 3_000_000), now);
        assert_eq!(s.target, Some("h".into()));
        for _ in 0..10 {
            s.steer(l.aim(s.target, 1_340_000), now);
        }
        assert_eq!(
            s.target,
            Some("h".into()),
            "one overuse step keeps the layer"
        );
        s.steer(l.aim(s.target, 1_020_000), now);
        assert_eq!(
            s.target,
            Some("m".into()),
            "a link that carries less moves it down"
        );
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_target_layer() {
        let now = Instant::now();
        let mut s = Selection::default();
        assert!(
            s.admit(Some("l".into()), false, now),
            "first layer starts flowing"
        );
        s.steer(Aim::Up("h".into()), now);
        assert!(s.wants_keyframe());
        assert!(!s.admit(Some("h".into()), false, now), "no switch mid-GOP");
        assert!(
            s.admit(Some("l".into()), false, now),
            "old layer keeps flowing"
        );
        assert!(
            s.admit(Some("h".into()), true, now),
            "switch on the keyframe"
        );
        assert!(!s.admit(Some("l".into()), true, now), "old layer stops");
        assert!(!s.wants_keyframe());
    }

    /// Moving down for bandwidth, the old layer stops at once: what it would add waits in a
    /// full link's queue ahead of the lower layer's keyframe. A publisher that sends no
    /// keyframe for DRAIN_AT_MOST gets the old layer forwarded again, not a frozen picture.
    #[test]
    fn a_move_down_for_bandwidth_stops_the_old_layer_while_its_keyframe_is_awaited() {
        let now = Instant::now();
        let mut s = Selection::default();
        assert!(s.admit(Some("h".into()), true, now));
        s.steer(Aim::Down("l".into()), now);
        assert!(
            !s.admit(Some("h".into()), false, now),
            "old layer held back"
        );
        assert!(!s.admit(Some("l".into()), false, now), "no switch mid-GOP");
        assert!(
            s.admit(Some("l".into()), true, now),
            "switch on the keyframe"
        );
        assert!(!s.admit(Some("h".into()), false, now));

        let mut s = Selection::default();
        assert!(s.admit(Some("h".into()), true, now));
        s.steer(Aim::Down("l".into()), now);
        let later = now + DRAIN_AT_MOST;
        assert!(
            s.admit(Some("h".into()), false, later),
            "no keyframe in time: the old layer again"
        );
        assert!(s.wants_keyframe(), "the switch still waits for one");

        let mut s = Selection::default();
        assert!(s.admit(Some("h".into()), true, now));
        s.set_cap(Some(0));
        s.steer(Aim::Start("l".into()), now);
        assert!(
            s.admit(Some("h".into()), false, now),
            "a tile shrinking is no full link: the old layer flows until the keyframe"
        );
    }

    #[test]
    fn a_full_size_tile_probes_for_the_top_layer_until_it_exists_or_the_link_is_congested() {
        let two = layers(&[("q", 150_000), ("h", 600_000)]);
        assert_eq!(two.wanted_bps(None, false), TOP_LAYER_BPS);
        assert_eq!(
            two.wanted_bps(Some(0), false),
            600_000,
            "a thumbnail asks for its own"
        );
        assert_eq!(
            two.wanted_bps(None, true),
            600_000,
            "a congested link is not probed"
        );
        let three = layers(&[("q", 150_000), ("h", 600_000), ("f", 1_800_000)]);
        assert_eq!(
            three.wanted_bps(None, false),
            1_800_000,
            "the top layer's own rate"
        );
    }

    #[test]
    fn non_simulcast_tracks_always_flow() {
        let mut s = Selection::default();
        assert!(s.admit(None, false, Instant::now()));
    }

    /// The publisher stops sending its top layer (its own uplink shrank): after GONE_AFTER the
    /// layer's rate is forgotten, the subscriber on it goes to the best layer still sent at
    /// once, and when the layer comes back and is measured, up again without a hold; while no
    /// layer comes at all (the camera is off) the choice stays.
    #[test]
    fn a_layer_the_publisher_stops_sending_is_left_at_once_and_taken_again_when_it_returns() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut l = Layers::default();
        let send = |l: &mut Layers, rids: &[&str], from: u64, to: u64| {
            for ms in (from..to).step_by(33) {
                for (n, rid) in rids.iter().enumerate() {
                    let size = if n == 0 { 600 } else { 6_000 };
                    l.record((*rid).into(), size, at(ms));
                }
            }
        };
        send(&mut l, &["l", "h"], 0, 2_100);
        let mut s = Selection::default();
        let plenty = 10_000_000;
        s.steer(l.aim(None, plenty), at(2_100));
        assert_eq!(s.target, Some("h".into()));

        send(&mut l, &["l"], 2_100, 2_500);
        l.expire(at(2_500));
        assert_eq!(
            l.aim(s.target, plenty),
            Aim::Stay,
            "a pause shorter than GONE_AFTER"
        );
        send(&mut l, &["l"], 2_500, 2_700);
        l.expire(at(2_700));
        assert_eq!(l.aim(s.target, plenty), Aim::Gone("l".into()));
        s.steer(l.aim(s.target, plenty), at(2_700));
        assert_eq!(s.target, Some("l".into()));
        assert!(!s.congested(), "not a move down for bandwidth");

        send(&mut l, &["l", "h"], 2_700, 4_000);
        l.expire(at(4_000));
        s.steer(l.aim(s.target, plenty), at(4_000));
        assert_eq!(s.target, Some("h".into()), "back up without UP_HOLD");
        assert!(l.top_bps() > 1_000_000, "measured afresh, not over the gap");

        l.expire(at(5_000));
        assert_eq!(l.aim(s.target, plenty), Aim::Stay, "the camera is off");
    }

    #[test]
    fn rates_are_measured_per_window() {
        let start = Instant::now();
        let mut l = Layers::default();
        for i in 0..100 {
            l.record("h".into(), 1_200, start + Duration::from_millis(i * 10));
        }
        l.record("h".into(), 1_200, start + Duration::from_millis(1_000));
        let bps = l.top_bps();
        // 100 packets of 1,200 bytes in one second: 960 kbit/s.
        assert!((900_000..1_000_000).contains(&bps), "{bps}");
    }
}
