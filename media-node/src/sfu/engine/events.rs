//! One str0m event of one participant: what it changes for that participant, what the node's
//! metrics record (`EngineStats`), and what it means for the others in the room.

use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::channel::ChannelData;
use str0m::net::Protocol;
use str0m::{Event, IceConnectionState};

use crate::protocol::{ErrorCode, MediaPath, PROTOCOL_VERSION, ProtocolError, ServerMessage};
use crate::sfu::participant::{ChatRefusal, Participant, Propagated};
use crate::sfu::stats::EngineStats;

/// The one SRTP profile the node's crypto policy lets a connection complete with.
const SRTP_PROFILE: &str = "AEAD_AES_256_GCM";

pub(super) fn on_event(
    p: &mut Participant,
    event: Event,
    now: Instant,
    stats: &EngineStats,
) -> Option<Propagated> {
    match event {
        Event::Connected => {
            p.connected = true;
            let path = match p.path {
                Some(Protocol::Tcp) => MediaPath::Tcp,
                _ => MediaPath::Udp,
            };
            stats.media_connected(
                SRTP_PROFILE,
                path,
                now.saturating_duration_since(p.joined_at),
            );
            p.tell(ServerMessage::MediaConnected {
                v: PROTOCOL_VERSION,
                // The policy provider withholds SRTP keys from any other profile, so a
                // completed connection has exactly this one.
                srtp_profile: SRTP_PROFILE.into(),
                path: Some(path),
            });
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
        Event::MediaData(data) => {
            if let Some(took) = p.first_media(now) {
                stats.join_to_media.record(took);
            }
            p.media_in(data, now)
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
            p.estimate_bps = Some(estimate.as_u64());
            None
        }
        Event::PeerStats(peer) => {
            stats.peer(&peer);
            None
        }
        Event::MediaIngressStats(ingress) => {
            let kind = p.tracks_in.iter().find(|t| t.mid == ingress.mid)?.kind;
            stats.ingress_jitter(kind, ingress.jitter);
            None
        }
        Event::MediaEgressStats(egress) => {
            let counts = [egress.nacks, egress.plis, egress.firs];
            stats.feedback_received(p.feedback_delta(egress.mid, egress.rid, counts));
            None
        }
        _ => None,
    }
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
