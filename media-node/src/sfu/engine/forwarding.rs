//! What one participant produced (media, chat, keyframe requests, new tracks), delivered to
//! the others in its room; and each subscriber's simulcast layers, chosen from its bandwidth
//! estimate.

use std::time::Duration;

use str0m::bwe::Bitrate;
use str0m::media::{MediaKind, Mid, Rid};

use super::Engine;
use crate::sfu::QUALITY;
use crate::sfu::participant::{MediaPacket, ParticipantId, Propagated, TrackIn};
use crate::sfu::simulcast::{Aim, Pad, fair_shares};
use crate::sfu::stats::RoomCounts;

/// One video a subscriber receives: its publisher and track, the layer aimed at, the tile's
/// cap, and how its link is padded towards a higher layer.
type Source = (ParticipantId, Mid, Option<Rid>, Option<usize>, Pad);

/// What a subscriber's videos would take ([`Engine::choose_layers`]).
struct Demand {
    /// Per video, the share past which more would lie unused.
    needs: Vec<u64>,
    /// What the estimator is asked to probe for.
    desired: u64,
    /// What the link is padded up to.
    sustain: u64,
    /// The lowest simulcast layers' media rates: less starves the video.
    lowest: u64,
    /// The estimate at which every video moves up a layer (those at their best stay);
    /// `None` when all are at their best.
    up: Option<u64>,
    /// The media rates of the layers aimed at now.
    carried: u64,
}

/// How often layer choices follow the bandwidth estimates.
const REBALANCE_EVERY: Duration = Duration::from_millis(500);
const MIN_VIDEO_BPS: u64 = 150_000;
/// A subscriber's floor (`Participant::floor_bps`) over its lowest layers' media rates: RTP
/// and SRTP headers, resends, and the audio that shares the pacer.
const FLOOR_OVER_LOWEST: f64 = 1.5;
/// What a subscriber's link carries over its video's media rates: RTP and SRTP headers and
/// retransmissions (its estimator is asked for this over what it wants, and its estimate is
/// lifted to this over what its layers carry: `Participant::carry_bps`).
const OVER_MEDIA: f64 = 1.25;

impl Engine {
    /// Delivers what participants produced to the others in their rooms, then lets everyone
    /// touched send, until nothing is left.
    pub(super) fn settle(&mut self) {
        loop {
            while let Some(prop) = self.queue.pop_front() {
                self.propagate(prop);
            }
            if self.dirty.is_empty() {
                break;
            }
            let mut dirty = std::mem::take(&mut self.dirty_spare);
            std::mem::swap(&mut dirty, &mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for id in dirty.drain(..) {
                self.drive(id);
            }
            self.dirty_spare = dirty;
            if self.queue.is_empty() && self.dirty.is_empty() {
                break;
            }
        }
        self.remove_gone();
        if self.now.saturating_duration_since(self.last_rebalance) >= REBALANCE_EVERY {
            self.rebalance();
            self.last_rebalance = self.now;
        }
    }

    fn propagate(&mut self, prop: Propagated) {
        match prop {
            Propagated::TrackOpened {
                source,
                mid,
                kind,
                screen,
            } => {
                for id in self.room_of(source) {
                    if let Some(p) = self.participants.get_mut(&id) {
                        p.subscribe(source, mid, kind, screen);
                        self.dirty.push(id);
                    }
                }
            }
            Propagated::Media { source, media } => self.forward(source, &media),
            Propagated::Chat { source, text } => self.relay_chat(source, &text),
            Propagated::KeyframeRequest {
                source,
                source_mid,
                rid,
                kind,
            } => {
                if let Some(p) = self.participants.get_mut(&source) {
                    p.request_keyframe(source_mid, rid, kind, self.now);
                    self.dirty.push(source);
                }
            }
        }
    }

    /// One packet to every subscriber in the source's room. The room's member list is
    /// borrowed, not copied: nothing here allocates per packet (the payload is an Arc shared
    /// by every subscriber).
    fn forward(&mut self, source: ParticipantId, media: &MediaPacket) {
        let Some(room) = self.participants.get(&source).map(|p| p.room.clone()) else {
            return;
        };
        let Some(members) = self.rooms.get(&room) else {
            return;
        };
        let now = self.now;
        for id in members.iter().filter(|m| **m != source) {
            let Some(p) = self.participants.get_mut(id) else {
                continue;
            };
            let forward = p.forward(source, media, now);
            self.stats.forwarded(&forward);
            if forward.switched || forward.hold_began {
                tracing::debug!(
                    target: QUALITY,
                    participant = %id,
                    from = %source,
                    rid = ?media.rid,
                    keyframe = media.keyframe,
                    switched = forward.switched,
                    hold_began = forward.hold_began,
                    "subscriber's video"
                );
            }
            if let Some(request) = forward.keyframe_request {
                self.queue.push_back(request);
            }
            if forward.written {
                self.dirty.push(*id);
            }
        }
        // Timed by the shell once the subscribers' datagrams are handed to the socket.
        self.delivered.push(media.packet.timestamp);
    }

    /// A chat message to everyone else in the room, over their data channels. The text is
    /// held only while it is written out: never logged, stored or counted by content.
    fn relay_chat(&mut self, source: ParticipantId, text: &str) {
        let Some(from) = self.participants.get(&source).map(|p| p.info()) else {
            return;
        };
        let envelope = serde_json::json!({"type": "chat", "from": from.id,
            "displayName": from.display_name, "text": text});
        let bytes = envelope.to_string().into_bytes();
        for id in self.room_of(source) {
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            let (Some(channel), Some(rtc)) = (p.chat_channel, p.rtc.as_mut()) else {
                continue;
            };
            let written = rtc
                .channel(channel)
                .map(|mut c| c.write(false, &bytes).unwrap_or(false))
                .unwrap_or(false);
            if written {
                self.stats.chat_messages.inc();
                self.dirty.push(id);
            } else {
                self.stats.chat_dropped.inc();
            }
        }
    }

    /// Everyone else in `source`'s room.
    fn room_of(&self, source: ParticipantId) -> Vec<ParticipantId> {
        let Some(p) = self.participants.get(&source) else {
            return Vec::new();
        };
        self.rooms
            .get(&p.room)
            .map(|members| members.iter().copied().filter(|m| *m != source).collect())
            .unwrap_or_default()
    }

    /// A publisher's incoming track `mid`; `None` once it is gone.
    fn track_in(&self, source: ParticipantId, mid: Mid) -> Option<&TrackIn> {
        let p = self.participants.get(&source)?;
        p.tracks_in.iter().find(|t| t.mid == mid)
    }

    /// Picks each subscriber's simulcast layers from its bandwidth estimate, and refreshes the
    /// room gauges.
    fn rebalance(&mut self) {
        let publishers = self
            .participants
            .values()
            .filter(|p| !p.tracks_in.is_empty())
            .count();
        let subscribers = self
            .participants
            .values()
            .filter(|p| p.tracks_out.iter().any(|t| t.kind == MediaKind::Video))
            .count();
        let counts = RoomCounts {
            rooms: self.rooms.len(),
            publishers,
            subscribers,
        };
        self.stats.room_gauges(self.counted, counts);
        self.counted = counts;
        let now = self.now;
        for track in self
            .participants
            .values_mut()
            .flat_map(|p| &mut p.tracks_in)
        {
            track.layers.expire(now);
            track.total.expire(now);
        }
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for id in ids {
            self.choose_layers(id);
        }
    }

    /// One subscriber's share of its estimate per video track it receives, and the layer of
    /// each that fits; the estimator is asked to probe for what the best layers need.
    pub(super) fn choose_layers(&mut self, id: ParticipantId) {
        let now = self.now;
        let Some((estimate, full)) = self.participants.get_mut(&id).and_then(|p| {
            let ceiling = p.egress_link.ceiling(now);
            let link_full = p.link_full(now);
            let budget = p.estimate_bps.map(|e| {
                let usable = p.recovery.usable(e, link_full, now);
                usable.min(ceiling.unwrap_or(u64::MAX))
            });
            p.chosen_for_bps = budget;
            // A link that loses or holds back what the node sends, or shrinks: no band to
            // stay in.
            let shrinking = p.estimate_bps.is_some_and(|e| p.recovery.shrinking(e, now));
            let full = link_full || shrinking;
            Some((budget?, full))
        }) else {
            return;
        };
        let sources: Vec<Source> = match self.participants.get_mut(&id) {
            Some(p) => p
                .video_out()
                .map(|t| {
                    let s = &t.selection;
                    (t.source, t.source_mid, s.target, s.cap, s.padding())
                })
                .collect(),
            None => return,
        };
        if sources.is_empty() {
            return;
        }
        let demand = self.demand(&sources);
        let shares = fair_shares(estimate, &demand.needs);
        let aims: Vec<Aim> = sources
            .iter()
            .zip(shares)
            .map(|(&(source, mid, target, cap, _), share)| {
                let layers = self.track_in(source, mid).map(|t| t.layers.capped(cap));
                match layers {
                    Some(layers) if layers.is_empty() => Aim::Stay,
                    Some(layers) if full => layers.aim_on_full_link(target, share),
                    Some(layers) => layers.aim(target, share),
                    None => Aim::Stay,
                }
            })
            .collect();
        let Demand {
            desired,
            sustain,
            lowest,
            up,
            carried,
            ..
        } = demand;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.floor_bps = (lowest as f64 * FLOOR_OVER_LOWEST) as u64;
        p.up_bps = up;
        p.carry_bps = (carried as f64 * OVER_MEDIA) as u64;
        // A move down for bandwidth: the old layer's resends would only delay the new one.
        let mut drained = Vec::new();
        for (track, aim) in p.video_out().zip(aims) {
            let was_draining = track.selection.draining();
            let before = track.selection.target;
            track.selection.steer(aim, now);
            if track.selection.target != before {
                tracing::debug!(
                    target: QUALITY,
                    participant = %id,
                    from = %track.source,
                    to = ?track.selection.target,
                    was = ?before,
                    budget = estimate,
                    full,
                    next_up_after = ?track.selection.up_hold(),
                    "layer target"
                );
            }
            if track.selection.draining() && !was_draining {
                drained.extend(track.mid());
            }
        }
        for mid in drained {
            p.forget_resends(mid);
        }
        if let Some(rtc) = p.rtc.as_mut() {
            let mut desired = ((desired as f64 * OVER_MEDIA) as u64).max(MIN_VIDEO_BPS);
            // str0m probes when what it is asked for rises over its estimate: asked for no
            // more than the estimate now, it probes at the next choice (`Recovery::probe_up`).
            if std::mem::take(&mut p.probe_dip) {
                desired = desired.min(estimate).max(MIN_VIDEO_BPS);
            }
            // The next layers' media rates, without the headroom: padding is pure overhead.
            let sustain = sustain.clamp(MIN_VIDEO_BPS, desired);
            rtc.bwe()
                .set_bitrate(Bitrate::bps(sustain), Bitrate::bps(desired));
        }
    }

    /// What each video the subscriber receives would take at most, and what its estimator is
    /// asked to probe for and pad up to.
    fn demand(&self, sources: &[Source]) -> Demand {
        let mut demand = Demand {
            needs: Vec::with_capacity(sources.len()),
            desired: 0,
            sustain: 0,
            lowest: 0,
            up: None,
            carried: 0,
        };
        // The estimate at which each video moves up a layer (or keeps its best), and whether
        // any has a layer to move up to.
        let (mut up_total, mut any_up) = (0, false);
        for &(source, mid, target, cap, pad) in sources {
            let congested = pad != Pad::Grow;
            let need = match self.track_in(source, mid) {
                // Gone: takes nothing.
                None => 0,
                // One encoding: nothing to grow into, no padding; it flows whatever it takes.
                Some(track) if track.layers.is_empty() => {
                    // No floor: an estimate under its only rate is the link's verdict, as
                    // there is nothing smaller to send (and a floor near the usual estimate
                    // would restart the estimator again and again).
                    demand.desired += track.total.bps;
                    demand.carried += track.total.bps;
                    up_total += track.total.bps;
                    track.total.bps
                }
                // A small tile caps the layers: its bandwidth goes to the others.
                Some(track) => {
                    let layers = track.layers.capped(cap);
                    demand.desired += layers.wanted_bps(cap, congested);
                    demand.sustain += layers.sustain_bps(target, pad);
                    demand.lowest += layers.lowest_bps();
                    demand.carried += layers.carried_bps(target);
                    let need = layers.need_bps(cap, congested);
                    let up = layers.up_bps(target);
                    any_up |= up.is_some();
                    up_total += up.unwrap_or(need);
                    need
                }
            };
            demand.needs.push(need);
        }
        demand.up = any_up.then_some(up_total);
        demand
    }
}
