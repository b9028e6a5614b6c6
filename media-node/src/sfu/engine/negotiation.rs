//! Offers, answers and ICE candidates between a client and its connection on this node. The
//! node answers the client's offers and offers it the others' tracks (`Participant::
//! negotiate_if_needed`); each connection has one host candidate, the advertised address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::crypto::CryptoProvider;
use str0m::media::KeyframeRequestKind;
use str0m::{Candidate, Rtc, RtcConfig};

use super::Engine;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::sfu::participant::{ParticipantId, Propagated};

impl Engine {
    pub(super) fn offer(&mut self, id: ParticipantId, sdp: &str) -> Result<String, ProtocolError> {
        let _span = tracing::info_span!("negotiate", tenant = %self.settings.tenant, sdp = "offer")
            .entered();
        self.admitted(id)?;
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
        let participant = self.admitted(id)?;
        let Some(rtc) = participant.rtc.as_mut() else {
            return Err(ProtocolError::new(
                ErrorCode::JoinFirst,
                "send your offer before ICE candidates",
            ));
        };
        let line = line.trim();
        if line.is_empty() {
            return Ok(()); // end of candidates
        }
        let candidate = Candidate::from_sdp_string(line).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidMessage,
                format!("not an ICE candidate line: {e}"),
            )
        })?;
        rtc.add_remote_candidate(candidate);
        self.dirty.push(id);
        Ok(())
    }
}

fn new_rtc(
    crypto: Arc<CryptoProvider>,
    advertised: SocketAddr,
    now: Instant,
) -> Result<Rtc, ProtocolError> {
    let mut rtc = RtcConfig::new()
        .set_crypto_provider(crypto)
        .set_stats_interval(Some(Duration::from_secs(1)))
        // Start where a 720p camera needs to be; the estimate then follows the network.
        .enable_bwe(Some(Bitrate::kbps(2_500)))
        .build(now);
    let candidate = Candidate::host(advertised, "udp").map_err(|e| {
        ProtocolError::new(
            ErrorCode::Internal,
            format!("the node's media address {advertised} is not usable: {e}"),
        )
    })?;
    rtc.add_local_candidate(candidate);
    Ok(rtc)
}
