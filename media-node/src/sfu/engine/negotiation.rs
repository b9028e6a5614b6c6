//! Offers, answers and ICE candidates between a client and its connection on this node. The
//! node answers the client's offers and offers it the others' tracks (`Participant::
//! negotiate_if_needed`); each connection has one host candidate, the advertised address.
//!
//! The node is ICE-lite (RFC 8445 section 2.5), as SFUs with a public address are: it answers
//! the browser's connectivity checks and sends none of its own, so no address a client names
//! is ever probed. Candidates are still taken (bounded, and only addresses a media node may
//! talk to), for the day a full agent needs them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::crypto::CryptoProvider;
use str0m::media::KeyframeRequestKind;
use str0m::net::TcpType;
use str0m::{Candidate, Rtc, RtcConfig};

use super::Engine;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::sfu::participant::{
    MAX_PUBLISHED_TRACKS, MAX_REMOTE_CANDIDATES, ParticipantId, Propagated,
};

impl Engine {
    pub(super) fn offer(&mut self, id: ParticipantId, sdp: &str) -> Result<String, ProtocolError> {
        let _span = tracing::info_span!("negotiate", tenant = %self.settings.tenant, sdp = "offer")
            .entered();
        self.admitted(id)?;
        let most = max_offer_sections(self.settings.max_participants);
        if media_sections(sdp) > most {
            return Err(ProtocolError::new(
                ErrorCode::InvalidSdp,
                format!("an offer may carry at most {most} media sections in a room of this size"),
            ));
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidSdp,
                format!("the offer is not valid SDP: {e}"),
            )
        })?;
        let (advertised, now) = (self.settings.advertised, self.now);
        let crypto = self.crypto.clone();
        let participant = self.admitted(id)?;
        if participant.rtc.is_none() {
            participant.rtc = Some(new_rtc(crypto, advertised, now)?);
        }
        participant.reset_negotiation();
        if participant.ice_restarted(ice_ufrag(sdp)) {
            tracing::info!(participant = %id, "the browser restarted ICE");
            self.stats.ice_restarts.inc();
        }
        let participant = self.admitted(id)?;
        let Some(rtc) = participant.rtc.as_mut() else {
            return Err(ProtocolError::new(
                ErrorCode::Internal,
                "no media connection",
            ));
        };
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidSdp,
                format!("the offer cannot be accepted: {e}"),
            )
        })?;
        self.dirty.push(id);
        Ok(answer.to_sdp_string())
    }

    pub(super) fn answer(&mut self, id: ParticipantId, sdp: &str) -> Result<(), ProtocolError> {
        let _span =
            tracing::info_span!("negotiate", tenant = %self.settings.tenant, sdp = "answer")
                .entered();
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidSdp,
                format!("the answer is not valid SDP: {e}"),
            )
        })?;
        let participant = self.admitted(id)?;
        let (Some(rtc), Some(pending)) = (participant.rtc.as_mut(), participant.pending.take())
        else {
            return Err(ProtocolError::new(
                ErrorCode::NoPendingOffer,
                "there is no offer from the node to answer",
            ));
        };
        rtc.sdp_api().accept_answer(pending, answer).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidSdp,
                format!("the answer cannot be accepted: {e}"),
            )
        })?;
        let opened = participant.negotiation_done();
        for (source, source_mid) in opened {
            self.queue.push_back(Propagated::KeyframeRequest {
                source,
                source_mid,
                rid: None,
                kind: KeyframeRequestKind::Fir,
            });
        }
        self.dirty.push(id);
        Ok(())
    }

    pub(super) fn candidate(&mut self, id: ParticipantId, line: &str) -> Result<(), ProtocolError> {
        let advertised = self.settings.advertised;
        let participant = self.admitted(id)?;
        if participant.rtc.is_none() {
            return Err(ProtocolError::new(
                ErrorCode::JoinFirst,
                "send your offer before ICE candidates",
            ));
        }
        let line = line.trim();
        if line.is_empty() {
            participant.candidates_done = true;
            self.report_path(id);
            return Ok(());
        }
        let candidate = Candidate::from_sdp_string(line).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidMessage,
                format!("not an ICE candidate line: {e}"),
            )
        })?;
        if participant.remote_candidates >= MAX_REMOTE_CANDIDATES {
            return Err(ProtocolError::new(
                ErrorCode::TooManyCandidates,
                format!("at most {MAX_REMOTE_CANDIDATES} ICE candidates per connection"),
            ));
        }
        participant.remote_candidates += 1;
        if candidate.kind() == str0m::CandidateKind::Relayed {
            participant.relay_candidates.push(candidate.addr());
            self.report_path(id);
        }
        let Some(rtc) = self.participants.get_mut(&id).and_then(|p| p.rtc.as_mut()) else {
            return Ok(());
        };
        if !contactable(candidate.addr(), advertised) {
            tracing::debug!("an ICE candidate for an address a media node never contacts, dropped");
            return Ok(());
        }
        rtc.add_remote_candidate(candidate);
        self.dirty.push(id);
        Ok(())
    }
}

/// The session-level (or first) `a=ice-ufrag` of an SDP; str0m keeps its own copy private.
pub(super) fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// The media sections an offer may hold: every participant's tracks (the client's own and
/// those the node offered it), and a data channel.
fn max_offer_sections(max_participants: usize) -> usize {
    MAX_PUBLISHED_TRACKS * max_participants.max(1) + 1
}

/// `m=` lines, counted before an offer is parsed.
fn media_sections(sdp: &str) -> usize {
    sdp.lines().filter(|l| l.starts_with("m=")).count()
}

/// Whether a media node may send to an address a client named: never to no address, to a
/// broadcast or multicast group, to a link-local address (a cloud's metadata service lives at
/// 169.254.169.254), to itself, or to loopback unless the node itself is on loopback (a
/// developer's machine, tests).
pub(crate) fn contactable(addr: SocketAddr, advertised: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    let forbidden = match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    let loopback_here = advertised.ip().to_canonical().is_loopback();
    addr.port() != 0
        && !forbidden
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && (loopback_here || !ip.is_loopback())
        && addr != advertised
}

/// The largest datagram the node sends media in: a browser's own full-size video packet
/// (Chrome's RTP packets are at most 1,200 bytes, then the 16-byte SRTP tag). With str0m's
/// default (1,150) a frame re-packetized for each subscriber needed one packet more than the
/// browser sent it in, and a one-packet frame two. 1,216 bytes in UDP stays under the 1,280 of
/// the smallest IPv6 link, with room for a TURN channel header.
const MEDIA_MTU: usize = 1_216;
/// Above this str0m logs a warning: IPv6's minimum link MTU less its IP and UDP headers.
const MEDIA_MTU_WARN: usize = 1_232;

pub(super) fn new_rtc(
    crypto: Arc<CryptoProvider>,
    advertised: SocketAddr,
    now: Instant,
) -> Result<Rtc, ProtocolError> {
    let mut rtc = RtcConfig::new()
        .set_crypto_provider(crypto)
        .set_ice_lite(true)
        // Packets are forwarded as they came (renumbered per subscriber), not reassembled
        // into frames and packetized again for every subscriber.
        .set_rtp_mode(true)
        // Four times a second, so that a collapsing estimate finds the link's loss of the last
        // second already read (`recovery.rs`); rates are still measured over a second
        // (`congestion::RATE_WINDOW`).
        .set_stats_interval(Some(Duration::from_millis(250)))
        // Start where a 720p camera needs to be; the estimate then follows the network.
        .enable_bwe(Some(Bitrate::bps(crate::sfu::simulcast::TOP_LAYER_BPS)))
        .set_mtu(MEDIA_MTU..=MEDIA_MTU_WARN)
        .build(now);
    let unusable = |e: str0m::error::IceError| {
        ProtocolError::new(
            ErrorCode::Internal,
            format!("the node's media address {advertised} is not usable: {e}"),
        )
    };
    rtc.add_local_candidate(Candidate::host(advertised, "udp").map_err(unusable)?);
    // ICE-TCP on the same address and port, for networks that block UDP. Its type preference
    // is lower (90 against 126), so a browser that reaches the node over UDP uses UDP.
    let tcp = Candidate::builder()
        .tcp()
        .host(advertised)
        .tcptype(TcpType::Passive)
        .build()
        .map_err(unusable)?;
    rtc.add_local_candidate(tcp);
    Ok(rtc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn a_media_node_never_contacts_what_a_client_must_not_point_it_at() {
        let public = at("203.0.113.10:30000");
        for refused in [
            "0.0.0.0:5000",
            "[::]:5000",
            "255.255.255.255:5000",
            "224.0.0.251:5353",
            "[ff02::1]:5000",
            "169.254.169.254:80",
            "[fe80::1]:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
            "198.51.100.7:0",
            "203.0.113.10:30000",
        ] {
            assert!(!contactable(at(refused), public), "{refused}");
        }
        for allowed in [
            "198.51.100.7:50000",
            "192.168.1.20:50000",
            "[2001:db8::7]:50000",
        ] {
            assert!(contactable(at(allowed), public), "{allowed}");
        }
        // A node on loopback (a developer's machine) talks to browsers on loopback.
        assert!(contactable(at("127.0.0.1:5000"), at("127.0.0.1:30000")));
    }

    #[test]
    fn an_offer_may_hold_every_participants_tracks_and_no_more() {
        let offer = |sections: usize| {
            "v=0\r\n".to_string() + &"m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(sections)
        };
        assert_eq!(media_sections(&offer(41)), 41);
        assert!(media_sections(&offer(41)) <= max_offer_sections(10));
        assert!(media_sections(&offer(42)) > max_offer_sections(10));
    }
}
