//! The media engine, sans-IO: every room, participant and str0m connection of the node, driven
//! by what the shell hands it (commands, datagrams, the time) and answering with the datagrams
//! to send. No socket and no clock inside: `now` comes with every call, so tests drive real
//! peers in memory.
//!
//! Peers are found by remote address in a map; only a STUN packet from an address not seen
//! before is matched by asking the connections still setting up.
//!
//! - `rooms`: meetings and who is in them (join, host actions, leaving, timeouts);
//! - `negotiation`: offers, answers and ICE candidates;
//! - `forwarding`: what one participant produced, delivered to the others; layer choice;
//! - `events`: one str0m event of one participant, and what it means for the others.

mod events;
mod forwarding;
mod negotiation;
mod probes;
mod rooms;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::crypto::CryptoProvider;
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Input, Output};

use super::command::{Command, EngineSettings};
use super::participant::{PATH_WAIT, Participant, ParticipantId, Propagated};
use super::shard::{RouteChange, Shard};
use super::stats::{ConnectionFailure, EngineStats, RoomCounts};
use crate::crypto_policy;
use crate::meeting::Meeting;
use crate::protocol::{ErrorCode, LeaveReason, PROTOCOL_VERSION, ProtocolError, ServerMessage};

/// The longest the shell sleeps without calling `handle_timeout` (meeting ticks, rebalancing).
const MAX_SLEEP: Duration = Duration::from_millis(100);

pub struct Engine {
    settings: EngineSettings,
    crypto: Arc<CryptoProvider>,
    participants: HashMap<ParticipantId, Participant>,
    by_addr: HashMap<(Protocol, SocketAddr), ParticipantId>,
    /// Addresses claimed and released since the shell last asked, for the receive task.
    route_changes: Vec<RouteChange>,
    rooms: HashMap<Arc<str>, Vec<ParticipantId>>,
    /// Which of the node's loops this engine is: it hands out the ids that name it.
    shard: Shard,
    /// This engine's share of the node's room gauges, as last added to them.
    counted: RoomCounts,
    next_id: u64,
    queue: VecDeque<Propagated>,
    dirty: Vec<ParticipantId>,
    gone: Vec<(ParticipantId, LeaveReason, Option<ProtocolError>)>,
    /// The previous round's dirty list, kept for its capacity.
    dirty_spare: Vec<ParticipantId>,
    stats: Arc<EngineStats>,
    last_rebalance: Instant,
    meetings: HashMap<Arc<str>, Meeting>,
    /// Ended meetings, remembered until then so no one rejoins them.
    ended: HashMap<Arc<str>, Instant>,
    /// Counts host actions, so memories written out of order are told apart.
    memory_revision: u64,
    last_meeting_tick: Instant,
    /// The time of the call being handled: the engine's only clock.
    now: Instant,
    /// Datagrams to send, in order, until the shell takes them.
    outbox: VecDeque<Transmit>,
    /// When each frame forwarded since the shell last asked arrived: the engine has no clock
    /// to time its own forwarding with.
    delivered: Vec<Instant>,
    /// Pre-call connectivity checks: ICE only, in no room.
    probes: probes::Probes,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("participants", &self.participants.len())
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(settings: EngineSettings, stats: Arc<EngineStats>, now: Instant) -> Self {
        let crypto = crypto_policy::provider(settings.policy);
        Self {
            settings,
            crypto,
            participants: HashMap::new(),
            by_addr: HashMap::new(),
            route_changes: Vec::new(),
            rooms: HashMap::new(),
            shard: Shard::SINGLE,
            counted: RoomCounts::default(),
            next_id: 1,
            queue: VecDeque::new(),
            dirty: Vec::new(),
            gone: Vec::new(),
            dirty_spare: Vec::new(),
            stats,
            last_rebalance: now,
            meetings: HashMap::new(),
            ended: HashMap::new(),
            memory_revision: 0,
            last_meeting_tick: now,
            now,
            outbox: VecDeque::new(),
            delivered: Vec::new(),
            probes: probes::Probes::default(),
        }
    }

    /// The engine as one of the node's loops (`sfu::shard`).
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// The shell's clock moves the engine's; it never goes back.
    fn clock(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// What signaling asked; replies go back on the command's channel.
    pub fn handle_command(&mut self, command: Command, now: Instant) {
        self.clock(now);
        match command {
            Command::Join {
                room,
                role,
                user,
                token_expires,
                display_name,
                remembered,
                entry,
                events,
                reply,
            } => {
                let joining = rooms::Joining {
                    role,
                    user,
                    token_expires,
                    display_name,
                    remembered,
                    entry,
                };
                let _ = reply.send(self.join(room, joining, events));
            }
            Command::Host { id, action, reply } => {
                let _ = reply.send(self.host(id, action));
            }
            Command::Unmute { id } => self.unmute(id),
            Command::Share { id, mid, reply } => {
                let _ = reply.send(self.admitted(id).map(|p| {
                    p.share_mid = Some(str0m::media::Mid::from(mid.as_str()));
                    p.share_stopped = false;
                }));
            }
            Command::Offer { id, sdp, reply } => {
                let _ = reply.send(self.offer(id, &sdp));
            }
            Command::Answer { id, sdp, reply } => {
                let _ = reply.send(self.answer(id, &sdp));
            }
            Command::Candidate {
                id,
                candidate,
                reply,
            } => {
                let _ = reply.send(self.candidate(id, &candidate));
            }
            Command::Leave { id, reason } => self.gone.push((id, reason, None)),
            Command::Advertise { address } => self.settings.advertised = address,
            Command::Rooms { reply } => {
                let _ = reply.send(Ok(self.held_rooms()));
            }
            Command::Cancel { room, reply } => {
                let _ = reply.send(Ok(self.cancel(room)));
            }
            Command::Shutdown { reason } => self.shutdown(&reason),
            Command::View { id, source, cap } => {
                if let Some(p) = self.participants.get_mut(&id) {
                    let mut grew = false;
                    for track in p
                        .tracks_out
                        .iter_mut()
                        .filter(|t| t.source == source && !t.screen)
                    {
                        grew |= track.selection.set_cap(cap);
                    }
                    if grew {
                        p.estimate_from_the_start();
                    }
                }
            }
            Command::Probe { sdp, reply } => {
                let opened = self.probes.open(
                    self.crypto.clone(),
                    self.settings.advertised,
                    &sdp,
                    self.now,
                );
                if opened.is_ok() {
                    self.stats.connection_checks.inc();
                }
                let _ = reply.send(opened);
            }
        }
    }

    /// One datagram from the media socket.
    pub fn handle_datagram(&mut self, contents: &[u8], source: SocketAddr, now: Instant) {
        self.handle_packet(Protocol::Udp, contents, source, now);
    }

    /// One packet from a browser: a UDP datagram, or a frame of an ICE-TCP connection.
    pub fn handle_packet(
        &mut self,
        proto: Protocol,
        contents: &[u8],
        source: SocketAddr,
        now: Instant,
    ) {
        self.clock(now);
        let size = contents.len() as u64;
        let Ok(contents) = contents.try_into() else {
            return;
        };
        let input = Input::Receive(
            self.now,
            Receive {
                proto,
                source,
                destination: self.settings.advertised,
                contents,
            },
        );
        let id = match self.by_addr.get(&(proto, source)) {
            Some(id) => *id,
            None => {
                // A new remote address: only its STUN binding request can say who it is.
                let Some(p) = self
                    .participants
                    .values_mut()
                    .find(|p| p.rtc.as_ref().is_some_and(|rtc| rtc.accepts(&input)))
                else {
                    // No participant's: a connection check's, or nobody's.
                    self.probes.receive(input, &mut self.outbox);
                    return;
                };
                p.remote_addrs.push((proto, source));
                self.by_addr.insert((proto, source), p.id);
                self.route_changes.push(RouteChange::Claimed(proto, source));
                p.id
            }
        };
        if let Some(p) = self.participants.get_mut(&id) {
            p.last_heard = self.now;
            p.path = Some(proto);
            if p.relayed {
                self.stats.relayed_bytes_in.inc_by(size);
            }
        }
        self.input(id, input);
    }

    /// Timers due by `now`, then delivery of everything received since the last call.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock(now);
        self.connection_timeouts();
        self.probes.timeouts(self.now, &mut self.outbox);
        self.meeting_timeouts();
        self.settle();
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The arrival times of the packets forwarded since the last call, for the forwarding
    /// delay the shell measures.
    pub fn drain_delivered(&mut self) -> std::vec::Drain<'_, Instant> {
        self.delivered.drain(..)
    }

    /// The remote addresses this engine's connections claimed or let go of since the last call.
    pub fn drain_route_changes(&mut self) -> std::vec::Drain<'_, RouteChange> {
        self.route_changes.drain(..)
    }

    /// When `handle_timeout` is due next.
    pub fn next_deadline(&self) -> Instant {
        self.participants
            .values()
            .filter_map(|p| p.next_timeout)
            .chain(self.probes.next_deadline())
            .fold(self.now + MAX_SLEEP, Instant::min)
    }

    /// Tell everyone, disconnect everyone.
    pub fn shutdown(&mut self, reason: &str) {
        for p in self.participants.values_mut() {
            p.tell(ServerMessage::Closing {
                v: PROTOCOL_VERSION,
                reason: reason.to_string(),
            });
            if let Some(rtc) = p.rtc.as_mut() {
                rtc.disconnect();
            }
        }
        // This loop's share of the node's gauges goes; the other loops' stays.
        self.stats.participants.sub(self.participants.len() as i64);
        self.stats.room_gauges(self.counted, RoomCounts::default());
        self.counted = RoomCounts::default();
        self.participants.clear();
        self.rooms.clear();
        self.route_changes.extend(
            self.by_addr
                .drain()
                .map(|((proto, addr), _)| RouteChange::Released(proto, addr)),
        );
    }

    fn participant(&mut self, id: ParticipantId) -> Result<&mut Participant, ProtocolError> {
        self.participants.get_mut(&id).ok_or_else(|| {
            ProtocolError::new(ErrorCode::NotAvailable, "you are no longer in the meeting")
        })
    }

    /// A participant in the room, not the waiting room: the only kind whose media may flow.
    fn admitted(&mut self, id: ParticipantId) -> Result<&mut Participant, ProtocolError> {
        let now = self.now;
        let p = self.participant(id)?;
        p.last_activity = now;
        if p.admitted {
            Ok(p)
        } else {
            Err(ProtocolError::new(
                ErrorCode::Waiting,
                "you are in the waiting room; media starts once a host admits you",
            ))
        }
    }

    fn touch(&mut self, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.last_activity = self.now;
        }
    }

    fn input(&mut self, id: ParticipantId, input: Input) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let Some(rtc) = p.rtc.as_mut() else {
            return;
        };
        if matches!(input, Input::Receive(..)) {
            p.last_activity = self.now;
        }
        if let Err(e) = rtc.handle_input(input) {
            self.failed(id, e);
            return;
        }
        self.drive(id);
    }

    fn failed(&mut self, id: ParticipantId, e: str0m::RtcError) {
        let connected = self.participants.get(&id).is_some_and(|p| p.connected);
        let text = e.to_string();
        // A handshake that fails before the connection is up: the peer offered no cipher suite
        // the tenant's policy allows.
        if !connected && matches!(e, str0m::RtcError::Dtls(_)) {
            let reason = crypto_policy::refusal_reason(self.settings.policy);
            tracing::warn!(participant = %id, error = %text, "{reason}");
            self.stats.failed(ConnectionFailure::EncryptionPolicy);
            self.gone.push((
                id,
                LeaveReason::MediaRefused,
                Some(ProtocolError::new(
                    ErrorCode::MediaEncryptionRefused,
                    reason,
                )),
            ));
        } else {
            if !connected {
                self.stats.failed(ConnectionFailure::Other);
            }
            tracing::info!(participant = %id, error = %text, "media connection ended");
            self.gone.push((id, LeaveReason::Disconnected, None));
        }
        if let Some(rtc) = self.participants.get_mut(&id).and_then(|p| p.rtc.as_mut()) {
            rtc.disconnect();
        }
    }

    /// Polls one participant until str0m has nothing more to say.
    fn drive(&mut self, id: ParticipantId) {
        let now = self.now;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.negotiate_if_needed();
        let mut failure = None;
        while let Some(rtc) = p.rtc.as_mut() {
            if !rtc.is_alive() {
                if !p.connected {
                    // Never got through ICE (or was refused above, which counted itself).
                    self.stats.failed(ConnectionFailure::Ice);
                }
                p.next_timeout = None;
                self.gone.push((id, LeaveReason::Disconnected, None));
                break;
            }
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    p.next_timeout = Some(t);
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    if !p.connected {
                        p.sent_to = Some(t.destination);
                    } else if p.relayed {
                        self.stats.relayed_bytes_out.inc_by(t.contents.len() as u64);
                    }
                    self.outbox.push_back(t)
                }
                Ok(Output::Event(event)) => {
                    if let Some(prop) = events::on_event(p, event, now, &self.stats) {
                        self.queue.push_back(prop);
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let worse = std::mem::take(&mut p.link_worse);
        if let Some(e) = failure {
            self.failed(id, e);
        } else if worse {
            self.choose_layers(id);
        }
    }

    /// Connections whose str0m timer is due, and participants whose signaling overflowed.
    /// Reports a participant's media connected once its path is known (see
    /// `Participant::path_known`).
    fn report_path(&mut self, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id) {
            events::report_connected(p, &self.stats, false);
        }
    }

    fn connection_timeouts(&mut self) {
        let now = self.now;
        // Connections whose path stayed unknown for PATH_WAIT are reported as they look.
        for p in self.participants.values_mut() {
            if p.unreported_since
                .is_some_and(|since| now.saturating_duration_since(since) >= PATH_WAIT)
            {
                events::report_connected(p, &self.stats, true);
            }
        }
        let due: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.next_timeout.is_some_and(|t| t <= now))
            .map(|p| p.id)
            .collect();
        for id in due {
            self.input(id, Input::Timeout(now));
        }
        self.gone.extend(
            self.participants
                .values()
                .filter(|p| p.overflowed || p.network_lost(now))
                .map(|p| (p.id, LeaveReason::Disconnected, None)),
        );
    }
}
