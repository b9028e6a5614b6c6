//! One str0m event of one participant: what it changes for that participant, what the node's
//! metrics record (`EngineStats`), and what it means for the others in the room.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::channel::ChannelData;
use str0m::media::MediaKind;
use str0m::net::Protocol;
use str0m::{Event, IceConnectionState};

use crate::protocol::{ErrorCode, MediaPath, PROTOCOL_VERSION, ProtocolError, ServerMessage};
use crate::sfu::QUALITY;
use crate::sfu::congestion::{Carried, Restart};
use crate::sfu::participant::{self, ChatRefusal, Participant, Propagated};
use crate::sfu::recovery::Reset;
use crate::sfu::stats::EngineStats;

/// An estimate this far below the budget the layers were chosen for has them chosen again at
/// once: a link that shrinks (a phone leaving Wi-Fi) is met before its next round of choices,
/// up to `REBALANCE_EVERY` later, while a wobble of a few percent waits for it.
const WORSE_BELOW: f64 = 0.85;

/// The one SRTP profile the node's crypto policy lets a connection complete with.
const SRTP_PROFILE: &str = crate::crypto_policy::AEAD_AES_256_GCM;

/// How a participant's media reaches the node. Media relayed by TURN arrives from the relay's
/// address and port, which the browser announced in its `relay` candidate; a relay that is
/// itself behind a NAT on its way to the node shows up as plain UDP.
fn media_path(
    transport: Option<Protocol>,
    sent_to: Option<SocketAddr>,
    relays: &[SocketAddr],
) -> MediaPath {
    match (transport, sent_to) {
        (Some(Protocol::Tcp), _) => MediaPath::Tcp,
        (_, Some(peer)) if relays.contains(&peer) => MediaPath::Relay,
        _ => MediaPath::Udp,
    }
}

/// Tells the participant and the metrics that media is up, and over which path, once the path
/// is known or `anyway` (the wait is over).
pub(super) fn report_connected(p: &mut Participant, stats: &EngineStats, anyway: bool) {
    let Some(connected_at) = p.unreported_since else {
        return;
    };
    if !anyway && !p.path_known() {
        return;
    }
    p.unreported_since = None;
    let path = media_path(p.path, p.sent_to, &p.relay_candidates);
    p.relayed = path == MediaPath::Relay;
    stats.media_connected(
        SRTP_PROFILE,
        path,
        connected_at.saturating_duration_since(p.joined_at),
    );
    p.tell(ServerMessage::MediaConnected {
        v: PROTOCOL_VERSION,
        // The policy provider withholds SRTP keys from any other profile, so a completed
        // connection has exactly this one.
        srtp_profile: SRTP_PROFILE.into(),
        path: Some(path),
    });
}

pub(super) fn on_event(
    p: &mut Participant,
    event: Event,
    now: Instant,
    stats: &EngineStats,
) -> Option<Propagated> {
    match event {
        Event::Connected => {
            p.connected = true;
            p.unreported_since = Some(now);
            report_connected(p, stats, false);
            None
        }
        // A network blip (Wi-Fi to cellular, a roaming phone): the browser has a while to
        // come back through ICE before the call is given up (see `ICE_GRACE`).
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            p.ice_lost_since.get_or_insert(now);
            None
        }
        // Checking again means the browser's checks arrive again: the path is back.
        Event::IceConnectionStateChange(_) => {
            p.ice_lost_since = None;
            None
        }
        Event::MediaAdded(added) => p.media_added(added.mid, added.kind, added.direction, now),
        Event::RtpPacket(packet) => {
            if let Some(took) = p.first_media(now) {
                stats.join_to_media.record(took);
            }
            p.rtp_in(packet, now)
        }
        Event::KeyframeRequest(req) => p.keyframe_wanted(req.mid, req.kind),
        Event::ChannelOpen(id, label) => {
            if label == "bedside" {
                p.chat_channel = Some(id);
            }
            None
        }
        Event::ChannelData(data) => chat(p, data, now, stats),
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            let mut estimate = estimate.as_u64();
            let (full, loss) = (p.link_full(now), p.egress_link.recent_loss(now));
            let reset = p
                .recovery
                .estimate(estimate, full, loss, now)
                .or_else(|| p.recovery.starved(estimate, p.floor_bps, loss, now));
            if let Some(reset) = reset {
                reset_estimator(p, reset, now, stats);
                estimate = reset.bps();
            }
            p.estimate_bps = Some(estimate);
            tracing::debug!(target: QUALITY, participant = %p.id, estimate, full, ?loss, "estimate");
            p.link_worse |= p
                .chosen_for_bps
                .is_some_and(|chosen| (estimate as f64) < chosen as f64 * WORSE_BELOW);
            None
        }
        Event::PeerStats(peer) => {
            stats.peer(&peer);
            let (uplink, raw) = (peer.ingress_loss_fraction, peer.bwe_tx.map(|b| b.as_u64()));
            p.recovery.link_read(uplink, raw, now);
            if let Some(loss) = peer.egress_loss_fraction {
                p.egress_link.link_loss(loss, now);
                tracing::debug!(target: QUALITY, participant = %p.id, loss, ?uplink, ?raw, up = ?p.up_bps, "link loss");
            }
            // The choice follows the estimator's own estimate on a link limited both ways, and
            // its measured rises where the link is not full (`Recovery::usable`).
            let full = p.link_full(now);
            let usable = p.estimate_bps.map(|e| p.recovery.usable(e, full, now));
            p.link_worse |= usable
                .zip(p.chosen_for_bps)
                .is_some_and(|(usable, chosen)| (usable as f64) < chosen as f64 * WORSE_BELOW);
            let undone = p.recovery.loss(peer.egress_loss_fraction, now);
            if let Some(reset) = undone {
                reset_estimator(p, reset, now, stats);
                p.link_worse = true;
            }
            // str0m reports its estimate as it changes, so one that sank or stopped stays
            // unreported while it stays there: it is checked here, as loss is read.
            let loss = p.egress_link.recent_loss(now);
            let estimate = p.estimate_bps?;
            let recovery = &mut p.recovery;
            let waiting = recovery.waiting_for_up(estimate, p.up_bps, loss, full, now);
            let stuck = recovery
                .starved(estimate, p.floor_bps, loss, now)
                .or_else(|| recovery.stagnant(estimate, waiting, now));
            if let Some(reset) = stuck {
                reset_estimator(p, reset, now, stats);
            } else if p.recovery.probe_up(waiting, now) {
                // Asked of str0m at the next layer choices (`Participant::probe_dip`).
                p.probe_dip = true;
                p.link_worse = true;
                stats.probes_for_move_up.inc();
            }
            None
        }
        Event::MediaIngressStats(ingress) => {
            let kind = p.tracks_in.iter().find(|t| t.mid == ingress.mid)?.kind;
            stats.ingress_jitter(kind, ingress.jitter);
            None
        }
        Event::MediaEgressStats(egress) => {
            let written = p
                .tracks_out
                .iter()
                .find(|t| t.kind == MediaKind::Video && t.mid() == Some(egress.mid))
                .map(|t| t.written);
            let mut restart = Restart::No;
            if let Some(written) = written {
                let carried = Carried {
                    bytes: egress.bytes,
                    written,
                };
                restart = p.egress_link.report(egress.mid, carried, egress.loss, now);
                let ceiling = p.egress_link.ceiling(now);
                tracing::debug!(
                    target: QUALITY,
                    participant = %p.id,
                    mid = %egress.mid,
                    sent = carried.bytes,
                    written,
                    loss = ?egress.loss,
                    ?ceiling,
                    ?restart,
                    "egress"
                );
                p.link_worse |=
                    ceiling.is_some_and(|ceiling| p.chosen_for_bps.is_none_or(|c| ceiling < c));
            }
            let counts = [egress.nacks, egress.plis, egress.firs];
            stats.feedback_received(p.feedback_delta(egress.mid, egress.rid, counts));
            let request = (restart == Restart::FromKeyframe)
                .then(|| p.restart_video(egress.mid))
                .flatten();
            if request.is_some() {
                stats.keyframes_for_loss.inc();
            }
            request
        }
        _ => None,
    }
}

/// Starts the participant's bandwidth estimator again from a rate (`recovery.rs`), counted.
fn reset_estimator(p: &mut Participant, reset: Reset, now: Instant, stats: &EngineStats) {
    if let Some(rtc) = p.rtc.as_mut() {
        participant::reset_estimator(rtc, &mut p.recovery, &mut p.estimate_bps, p.id, reset);
    }
    if matches!(reset, Reset::Reprobe(_)) {
        for track in &mut p.tracks_out {
            track.selection.link_measured(now);
        }
    }
    stats.estimator_reset(reset);
}

/// A message on the participant's `bedside` channel: chat for the room, within its limits.
fn chat(
    p: &mut Participant,
    data: ChannelData,
    now: Instant,
    stats: &EngineStats,
) -> Option<Propagated> {
    if Some(data.id) != p.chat_channel || !p.admitted {
        return None;
    }
    p.last_activity = now;
    match p.chat_limits.check(&data.data, data.binary, now) {
        Ok(text) => Some(Propagated::Chat {
            source: p.id,
            text: text.into(),
        }),
        Err(refusal) => {
            stats.chat_refused.inc();
            let message = match refusal {
                ChatRefusal::TooLong => "chat messages are at most 2,000 bytes",
                ChatRefusal::TooFast => "too many chat messages; wait a few seconds",
                ChatRefusal::NotText => "chat messages are UTF-8 text",
            };
            p.tell(ProtocolError::new(ErrorCode::ChatRefused, message).to_message(false));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_from_the_browsers_relay_candidate_is_relayed_and_other_media_is_not() {
        let relayed: SocketAddr = "192.0.2.10:50000".parse().expect("addr");
        let direct: SocketAddr = "192.0.2.10:50001".parse().expect("addr");
        let udp = Some(Protocol::Udp);
        assert_eq!(media_path(udp, Some(relayed), &[relayed]), MediaPath::Relay);
        // The relay's host, another port: the browser's own host candidate on that machine.
        assert_eq!(media_path(udp, Some(direct), &[relayed]), MediaPath::Udp);
        assert_eq!(media_path(udp, Some(direct), &[]), MediaPath::Udp);
        assert_eq!(
            media_path(Some(Protocol::Tcp), Some(relayed), &[relayed]),
            MediaPath::Tcp
        );
        assert_eq!(media_path(None, None, &[relayed]), MediaPath::Udp);
    }
}
