//! The pre-call connectivity check: a browser offers a throwaway connection (a data channel
//! only) and ICE runs against the node's media address as a call's would. It joins no room,
//! carries no media and ends by itself: the browser learns which of its paths (UDP, TCP, the
//! tenant's relay) reach the node before anyone is in a call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::crypto::CryptoProvider;
use str0m::net::Transmit;
use str0m::{Input, Output, Rtc};

use super::negotiation::new_rtc;
use crate::protocol::{ErrorCode, ProtocolError};

/// Long enough for ICE over each path (and a TURN allocation over TLS) on a slow network.
pub const PROBE_LIFETIME: Duration = Duration::from_secs(20);
/// Checks open at once on a node: a check costs a str0m connection; more is a flood.
pub const MAX_PROBES: usize = 64;
/// A check's offer is a data channel and nothing else.
const MAX_PROBE_SDP: usize = 8 * 1024;

struct Probe {
    rtc: Rtc,
    ends: Instant,
    next_timeout: Option<Instant>,
}

/// The checks open on this node.
#[derive(Default)]
pub(super) struct Probes {
    open: Vec<Probe>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("open", &self.open.len())
            .finish()
    }
}

impl Probes {
    /// Answers a check's offer with the node's candidates (UDP and TCP on its media address).
    pub(super) fn open(
        &mut self,
        crypto: Arc<CryptoProvider>,
        advertised: std::net::SocketAddr,
        sdp: &str,
        now: Instant,
    ) -> Result<String, ProtocolError> {
        self.expire(now);
        if self.open.len() >= MAX_PROBES {
            return Err(ProtocolError::new(
                ErrorCode::NotAvailable,
                "this media node is running too many connection checks; try again in a minute",
            ));
        }
        if sdp.len() > MAX_PROBE_SDP || sdp.contains("m=audio") || sdp.contains("m=video") {
            return Err(ProtocolError::new(
                ErrorCode::InvalidSdp,
                "a connection check offers a data channel only",
            ));
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidSdp,
                format!("the check's offer is not valid SDP: {e}"),
            )
        })?;
        let mut rtc = new_rtc(crypto, advertised, now)?;
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidSdp,
                format!("the check's offer cannot be accepted: {e}"),
            )
        })?;
        self.open.push(Probe {
            rtc,
            ends: now + PROBE_LIFETIME,
            next_timeout: Some(now),
        });
        Ok(answer.to_sdp_string())
    }

    /// A packet no participant took: a check's, if one accepts it; else nobody's.
    pub(super) fn receive(&mut self, input: Input, outbox: &mut impl Extend<Transmit>) {
        let Some(probe) = self.open.iter_mut().find(|p| p.rtc.accepts(&input)) else {
            return;
        };
        if probe.rtc.handle_input(input).is_ok() {
            drive(probe, outbox);
        }
    }

    /// Timers due by `now`; checks past their lifetime or dead are dropped.
    pub(super) fn timeouts(&mut self, now: Instant, outbox: &mut impl Extend<Transmit>) {
        for probe in &mut self.open {
            if probe.next_timeout.is_some_and(|t| t <= now)
                && probe.rtc.handle_input(Input::Timeout(now)).is_ok()
            {
                drive(probe, outbox);
            }
        }
        self.expire(now);
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .map(|p| p.next_timeout.unwrap_or(p.ends).min(p.ends))
            .min()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.open.len()
    }

    fn expire(&mut self, now: Instant) {
        self.open.retain(|p| p.ends > now && p.rtc.is_alive());
    }
}

/// Polls a check's connection until str0m has nothing more to say; its events (a data channel
/// opened, ICE connected) matter only to the browser.
fn drive(probe: &mut Probe, outbox: &mut impl Extend<Transmit>) {
    while probe.rtc.is_alive() {
        match probe.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                probe.next_timeout = Some(t);
                return;
            }
            Ok(Output::Transmit(t)) => outbox.extend([t]),
            Ok(Output::Event(_)) => {}
            Err(_) => {
                probe.rtc.disconnect();
                return;
            }
        }
    }
}
