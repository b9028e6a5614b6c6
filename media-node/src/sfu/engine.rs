//! The media loop: one UDP socket shared by every peer, all rooms, one task.
//!
//! str0m is sans-IO: this loop feeds it datagrams and timeouts and carries out what it asks
//! (send a datagram, deliver media). Peers are found by remote address in a map; only a STUN
//! packet from an address not seen before is matched by asking the connections still setting up.
//! Sends never wait: a full socket buffer drops the datagram (RTX repairs it) so one slow
//! subscriber never stalls the others.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::crypto::CryptoProvider;
use str0m::media::KeyframeRequestKind;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::participant::{ChatRefusal, Participant, ParticipantId, Propagated};
use super::stats::{ConnectionFailure, EngineStats};
use crate::crypto_policy::{self, SrtpPolicy};
use crate::meeting::{self, Meeting};
use crate::protocol::{
    DisplayName, ErrorCode, LeaveReason, PROTOCOL_VERSION, ParticipantInfo, ProtocolError,
    ServerMessage,
};
use bedside_crds::join::Role;

/// How often layer choices follow the bandwidth estimates.
const REBALANCE_EVERY: Duration = Duration::from_millis(500);
/// Datagrams read per wake-up before other work gets a turn.
const READ_BATCH: usize = 64;
const MIN_VIDEO_BPS: u64 = 150_000;

/// What the engine needs to know about its node.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The tenant's name, for log spans (never a user or a room).
    pub tenant: String,
    /// The address browsers send media to; the one host candidate of every connection.
    pub advertised: SocketAddr,
    pub policy: SrtpPolicy,
    pub max_participants: usize,
    /// The tenant's meeting rules (idle timeout, maximum duration).
    pub meeting: meeting::Policy,
    /// Media is encrypted end to end by the clients; the node forwards frames it cannot read.
    pub end_to_end: bool,
}

/// A host's action on the meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAction {
    Admit(ParticipantId),
    Deny(ParticipantId),
    Lock(bool),
    Expel(ParticipantId),
    Mute(Option<ParticipantId>),
    StopShare(ParticipantId),
    End,
}

/// How often meetings are checked for timeouts.
const MEETING_TICK: Duration = Duration::from_secs(1);
/// How long an ended meeting is remembered (so no one rejoins it), after its end.
const ENDED_MEETING_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// A request from signaling to the media loop.
#[derive(Debug)]
pub enum Command {
    Join {
        room: String,
        role: Role,
        user: String,
        token_expires: Instant,
        display_name: Option<DisplayName>,
        /// The meeting's memory from before this pod held the room (placement).
        remembered: Option<meeting::Memory>,
        events: mpsc::Sender<ServerMessage>,
        reply: oneshot::Sender<Result<Joined, ProtocolError>>,
    },
    Offer {
        id: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<String, ProtocolError>>,
    },
    Answer {
        id: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    Candidate {
        id: ParticipantId,
        candidate: String,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    Leave {
        id: ParticipantId,
        reason: LeaveReason,
    },
    /// A host's action; the reply carries the meeting's memory after it.
    Host {
        id: ParticipantId,
        action: HostAction,
        reply: oneshot::Sender<Result<meeting::Memory, ProtocolError>>,
    },
    /// The participant unmutes themselves.
    Unmute { id: ParticipantId },
    /// The client's next offer carries its screen share on this m-line.
    Share {
        id: ParticipantId,
        mid: String,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    /// The address browsers reach this node's media at changed (the operator gave this pod
    /// its public address); connections made from now on use it.
    Advertise { address: SocketAddr },
    /// The rooms that have a meeting here (placement lets go of the others' leases).
    Rooms {
        reply: oneshot::Sender<Result<Vec<String>, ProtocolError>>,
    },
    /// The clinic cancelled the visit held in `room`: its meeting here ends for everyone. The
    /// reply says whether a meeting was running.
    Cancel {
        room: String,
        reply: oneshot::Sender<Result<bool, ProtocolError>>,
    },
    /// Tell everyone, disconnect everyone, stop.
    Shutdown { reason: String },
}

#[derive(Debug, Clone)]
pub struct Joined {
    pub id: ParticipantId,
    pub participants: Vec<ParticipantInfo>,
    /// False: in the waiting room; `joined` follows when a host admits them.
    pub admitted: bool,
}

pub struct Engine {
    socket: UdpSocket,
    settings: EngineSettings,
    crypto: Arc<CryptoProvider>,
    participants: HashMap<ParticipantId, Participant>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
    rooms: HashMap<Arc<str>, Vec<ParticipantId>>,
    next_id: u64,
    queue: VecDeque<Propagated>,
    dirty: Vec<ParticipantId>,
    gone: Vec<(ParticipantId, LeaveReason, Option<ProtocolError>)>,
    failures: Vec<(ParticipantId, str0m::RtcError)>,
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
    pub fn new(socket: UdpSocket, settings: EngineSettings, stats: Arc<EngineStats>) -> Self {
        let crypto = crypto_policy::provider(settings.policy);
        Self {
            socket,
            settings,
            crypto,
            participants: HashMap::new(),
            by_addr: HashMap::new(),
            rooms: HashMap::new(),
            next_id: 1,
            queue: VecDeque::new(),
            dirty: Vec::new(),
            gone: Vec::new(),
            failures: Vec::new(),
            dirty_spare: Vec::new(),
            stats,
            last_rebalance: Instant::now(),
            meetings: HashMap::new(),
            ended: HashMap::new(),
            memory_revision: 0,
            last_meeting_tick: Instant::now(),
        }
    }

    /// Runs until a `Shutdown` command or until every command sender is gone.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                command = commands.recv() => {
                    match command {
                        Some(Command::Shutdown { reason }) => {
                            self.shutdown(&reason);
                            return;
                        }
                        Some(command) => self.command(command),
                        None => {
                            self.shutdown("the node is stopping");
                            return;
                        }
                    }
                }
                received = self.socket.recv_from(&mut buf) => {
                    match received {
                        Ok((n, source)) => {
                            self.datagram(&buf[..n], source, Instant::now());
                            for _ in 0..READ_BATCH {
                                match self.socket.try_recv_from(&mut buf) {
                                    Ok((n, source)) => self.datagram(&buf[..n], source, Instant::now()),
                                    Err(_) => break,
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "media socket read failed"),
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            self.stats.heartbeat.beat(now);
            self.timeouts(now);
            self.meeting_timeouts(now);
            self.settle();
        }
    }

    fn next_deadline(&self) -> Instant {
        let cap = Instant::now() + Duration::from_millis(100);
        self.participants
            .values()
            .filter_map(|p| p.next_timeout)
            .fold(cap, Instant::min)
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Join {
                room,
                role,
                user,
                token_expires,
                display_name,
                remembered,
                events,
                reply,
            } => {
                let joining = Joining {
                    role,
                    user,
                    token_expires,
                    display_name,
                    remembered,
                };
                let _ = reply.send(self.join(room, joining, events));
            }
            Command::Host { id, action, reply } => {
                let _ = reply.send(self.host(id, action));
            }
            Command::Unmute { id } => {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.muted = false;
                    p.last_activity = Instant::now();
                    if let Some(meeting) = self.meetings.get_mut(&p.room) {
                        meeting.unmute_self(id.0);
                    }
                }
            }
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
                // Ended meetings too: they are remembered (and their rooms held) for a day.
                let rooms = self.meetings.keys().chain(self.ended.keys());
                let _ = reply.send(Ok(rooms.map(|r| r.to_string()).collect()));
            }
            Command::Cancel { room, reply } => {
                let room: Arc<str> = room.into();
                let effects = self
                    .meetings
                    .get_mut(&room)
                    .map(|meeting| meeting.cancel())
                    .unwrap_or_default();
                let _ = reply.send(Ok(!effects.is_empty()));
                self.apply(&room, effects);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn join(
        &mut self,
        room: String,
        joining: Joining,
        events: mpsc::Sender<ServerMessage>,
    ) -> Result<Joined, ProtocolError> {
        let now = Instant::now();
        let room: Arc<str> = Arc::from(room);
        if self.ended.contains_key(&room) {
            return Err(refusal(meeting::Refusal::Ended));
        }
        let present = self
            .participants
            .values()
            .filter(|p| p.room == room)
            .count();
        if present >= self.settings.max_participants {
            return Err(ProtocolError::new(
                ErrorCode::RoomFull,
                format!(
                    "the meeting is full ({} participants, the tenant's limit)",
                    self.settings.max_participants
                ),
            ));
        }
        let id = ParticipantId(self.next_id);
        let policy = self.settings.meeting;
        let effects = self
            .meetings
            .entry(room.clone())
            .or_insert_with(|| {
                let mut meeting = Meeting::new(policy, now);
                if let Some(memory) = &joining.remembered {
                    meeting.restore(memory);
                }
                meeting
            })
            .join(
                id.0,
                &joining.user,
                joining.role,
                joining.token_expires,
                now,
            )
            .map_err(refusal)?;
        self.next_id += 1;
        let mut participant = Participant::new(id, room.clone(), joining.role, events);
        participant.display_name = joining.display_name;
        participant.user = joining.user;
        self.participants.insert(id, participant);
        self.stats.participants.inc();
        tracing::info!(participant = %id, rooms = self.rooms.len(), "participant joined");
        let participants = self.admitted_in(&room);
        // A host enters at once: the session answers `joined` itself, so no second one.
        let (own, rest): (Vec<_>, Vec<_>) = effects
            .into_iter()
            .partition(|e| *e == meeting::Effect::Admit(id.0));
        if !own.is_empty() {
            self.admit(id, false);
        }
        self.apply(&room, rest);
        let admitted = self.participants.get(&id).is_some_and(|p| p.admitted);
        Ok(Joined {
            id,
            participants,
            admitted,
        })
    }

    /// Who is in the room (admitted), as the others see them.
    fn admitted_in(&self, room: &Arc<str>) -> Vec<ParticipantInfo> {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|id| self.participants.get(id))
            .map(|p| p.info())
            .collect()
    }

    fn host(
        &mut self,
        id: ParticipantId,
        action: HostAction,
    ) -> Result<meeting::Memory, ProtocolError> {
        let room = self.participant(id)?.room.clone();
        self.touch(id);
        let meeting = self
            .meetings
            .get_mut(&room)
            .ok_or_else(|| refusal(meeting::Refusal::Ended))?;
        let effects = match action {
            HostAction::Admit(t) => meeting.admit(id.0, t.0),
            HostAction::Deny(t) => meeting.deny(id.0, t.0),
            HostAction::Lock(locked) => meeting.lock(id.0, locked),
            HostAction::Expel(t) => meeting.expel(id.0, t.0),
            HostAction::Mute(t) => meeting.mute(id.0, t.map(|t| t.0)),
            HostAction::StopShare(t) => meeting.stop_share(id.0, t.0),
            HostAction::End => meeting.end(id.0),
        }
        .map_err(refusal)?;
        self.apply(&room, effects);
        // An ended meeting is gone from `meetings`; its memory is that it ended.
        let mut memory = self
            .meetings
            .get(&room)
            .map(Meeting::memory)
            .unwrap_or_else(|| meeting::Memory {
                ended: true,
                ..Default::default()
            });
        self.memory_revision += 1;
        memory.revision = self.memory_revision;
        Ok(memory)
    }

    /// Carries out what the meeting decided.
    fn apply(&mut self, room: &Arc<str>, effects: Vec<meeting::Effect>) {
        use meeting::Effect;
        for effect in effects {
            match effect {
                Effect::Admit(raw) => self.admit(ParticipantId(raw), true),
                Effect::Remove(raw, reason) => {
                    self.gone.push((
                        ParticipantId(raw),
                        LeaveReason::Removed,
                        Some(removal(reason)),
                    ));
                }
                Effect::Mute(raw) => {
                    if let Some(p) = self.participants.get_mut(&ParticipantId(raw)) {
                        p.muted = true;
                        p.tell(ServerMessage::Muted {
                            v: PROTOCOL_VERSION,
                        });
                    }
                }
                Effect::StopShare(raw) => {
                    if let Some(p) = self.participants.get_mut(&ParticipantId(raw)) {
                        p.share_stopped = true;
                        p.tell(ServerMessage::ShareStopped {
                            v: PROTOCOL_VERSION,
                        });
                    }
                }
                Effect::WaitingChanged => self.tell_hosts_who_waits(room),
                Effect::LockChanged(locked) => {
                    self.tell_room(
                        room,
                        ServerMessage::Locked {
                            v: PROTOCOL_VERSION,
                            locked,
                        },
                    );
                }
                Effect::Warn(left) => {
                    self.tell_room(
                        room,
                        ServerMessage::MeetingEnding {
                            v: PROTOCOL_VERSION,
                            in_seconds: left.as_secs(),
                        },
                    );
                }
                Effect::End(reason) => {
                    let everyone: Vec<ParticipantId> = self
                        .participants
                        .values()
                        .filter(|p| p.room == *room)
                        .map(|p| p.id)
                        .collect();
                    for id in everyone {
                        self.gone
                            .push((id, LeaveReason::Removed, Some(removal(reason))));
                    }
                    self.meetings.remove(room);
                    self.ended.insert(room.clone(), Instant::now());
                    tracing::info!(reason = reason.code(), "meeting ended");
                }
            }
        }
    }

    /// Into the room: the others are told, the newcomer subscribes to what is published and,
    /// when `announce`, gets `joined` (admitted from the waiting room).
    fn admit(&mut self, id: ParticipantId, announce: bool) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if p.admitted {
            return;
        }
        p.admitted = true;
        let room = p.room.clone();
        let info = p.info();
        let already = self.admitted_in(&room);
        let members = self.rooms.entry(room.clone()).or_default();
        let others: Vec<ParticipantId> = members.clone();
        members.push(id);
        let mut published = Vec::new();
        for other in others {
            if let Some(o) = self.participants.get_mut(&other) {
                o.tell(ServerMessage::ParticipantJoined {
                    v: PROTOCOL_VERSION,
                    participant: info.clone(),
                });
                published.extend(o.tracks_in.iter().map(|t| (o.id, t.mid, t.kind, t.screen)));
            }
        }
        if let Some(p) = self.participants.get_mut(&id) {
            for (source, mid, kind, screen) in published {
                p.subscribe(source, mid, kind, screen);
            }
            if !announce {
                return;
            }
            p.tell(ServerMessage::Joined {
                v: PROTOCOL_VERSION,
                participant_id: id.to_string(),
                room: room.to_string(),
                role: p.role,
                participants: already,
                end_to_end: self.settings.end_to_end,
            });
        }
    }

    fn tell_hosts_who_waits(&mut self, room: &Arc<str>) {
        let Some(meeting) = self.meetings.get(room) else {
            return;
        };
        let waiting: Vec<ParticipantInfo> = meeting
            .waiting()
            .into_iter()
            .filter_map(|raw| self.participants.get(&ParticipantId(raw)))
            .map(|p| p.info())
            .collect();
        for host in meeting.hosts() {
            if let Some(h) = self.participants.get_mut(&ParticipantId(host)) {
                h.tell(ServerMessage::WaitingRoom {
                    v: PROTOCOL_VERSION,
                    waiting: waiting.clone(),
                });
            }
        }
    }

    /// Everyone in the room and its waiting room.
    fn tell_room(&mut self, room: &Arc<str>, message: ServerMessage) {
        for p in self.participants.values_mut().filter(|p| p.room == *room) {
            p.tell(message.clone());
        }
    }

    fn touch(&mut self, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.last_activity = Instant::now();
        }
    }

    /// Idle participants, expired tokens, maximum durations, hostless meetings.
    fn meeting_timeouts(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_meeting_tick) < MEETING_TICK {
            return;
        }
        self.last_meeting_tick = now;
        // One pass over the participants, not one per meeting: this runs every second.
        for p in self.participants.values() {
            if let Some(meeting) = self.meetings.get_mut(&p.room) {
                meeting.activity(p.id.0, p.last_activity);
            }
        }
        let rooms: Vec<Arc<str>> = self.meetings.keys().cloned().collect();
        for room in rooms {
            if let Some(meeting) = self.meetings.get_mut(&room) {
                let effects = meeting.tick(now);
                self.apply(&room, effects);
            }
        }
        self.ended
            .retain(|_, at| now.saturating_duration_since(*at) < ENDED_MEETING_MEMORY);
    }

    fn participant(&mut self, id: ParticipantId) -> Result<&mut Participant, ProtocolError> {
        self.participants.get_mut(&id).ok_or_else(|| {
            ProtocolError::new(ErrorCode::NotAvailable, "you are no longer in the meeting")
        })
    }

    /// A participant in the room, not the waiting room: the only kind whose media may flow.
    fn admitted(&mut self, id: ParticipantId) -> Result<&mut Participant, ProtocolError> {
        let p = self.participant(id)?;
        p.last_activity = Instant::now();
        if p.admitted {
            Ok(p)
        } else {
            Err(ProtocolError::new(
                ErrorCode::Waiting,
                "you are in the waiting room; media starts once a host admits you",
            ))
        }
    }

    fn offer(&mut self, id: ParticipantId, sdp: &str) -> Result<String, ProtocolError> {
        let _span = tracing::info_span!("negotiate", tenant = %self.settings.tenant, sdp = "offer")
            .entered();
        self.admitted(id)?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidSdp,
                format!("the offer is not valid SDP: {e}"),
            )
        })?;
        let advertised = self.settings.advertised;
        let crypto = self.crypto.clone();
        let participant = self.admitted(id)?;
        if participant.rtc.is_none() {
            participant.rtc = Some(new_rtc(crypto, advertised)?);
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

    fn answer(&mut self, id: ParticipantId, sdp: &str) -> Result<(), ProtocolError> {
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

    fn candidate(&mut self, id: ParticipantId, line: &str) -> Result<(), ProtocolError> {
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
        // Test and dev peers live on loopback only; everything else is the peer's business.
        rtc.add_remote_candidate(candidate);
        self.dirty.push(id);
        Ok(())
    }

    fn datagram(&mut self, contents: &[u8], source: SocketAddr, now: Instant) {
        self.stats.packets_in.inc();
        self.stats.bytes_in.inc_by(contents.len() as u64);
        let Ok(contents) = contents.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.settings.advertised,
                contents,
            },
        );
        let id = match self.by_addr.get(&source) {
            Some(id) => *id,
            None => {
                // A new remote address: only its STUN binding request can say who it is.
                let Some(p) = self
                    .participants
                    .values_mut()
                    .find(|p| p.rtc.as_ref().is_some_and(|rtc| rtc.accepts(&input)))
                else {
                    return;
                };
                p.remote_addrs.push(source);
                self.by_addr.insert(source, p.id);
                p.id
            }
        };
        self.input(id, input);
    }

    fn input(&mut self, id: ParticipantId, input: Input) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let Some(rtc) = p.rtc.as_mut() else {
            return;
        };
        if matches!(input, Input::Receive(..)) {
            p.last_activity = Instant::now();
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
        let now = Instant::now();
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
            let output = match rtc.poll_output() {
                Ok(output) => output,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            match output {
                Output::Timeout(t) => {
                    p.next_timeout = Some(t);
                    break;
                }
                Output::Transmit(t) => match self.socket.try_send_to(&t.contents, t.destination) {
                    Ok(n) => {
                        self.stats.packets_out.inc();
                        self.stats.bytes_out.inc_by(n as u64);
                    }
                    Err(e) => {
                        if e.kind() != ErrorKind::WouldBlock {
                            tracing::debug!(error = %e, "media send failed");
                        }
                        self.stats.send_dropped.inc();
                    }
                },
                Output::Event(event) => {
                    if let Some(prop) = on_event(p, event, now, &self.stats) {
                        self.queue.push_back(prop);
                    }
                }
            }
        }
        if let Some(e) = failure {
            self.failed(id, e);
        }
    }

    /// Delivers what one participant produced to the others in its room, then lets everyone
    /// touched send, until nothing is left.
    fn settle(&mut self) {
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
        if self.last_rebalance.elapsed() >= REBALANCE_EVERY {
            self.rebalance();
            self.last_rebalance = Instant::now();
        }
    }

    fn propagate(&mut self, prop: Propagated) {
        let now = Instant::now();
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
            Propagated::Media { source, data } => {
                // The room's member list is borrowed, not copied: nothing here allocates per
                // frame (the payload is an Arc shared by every subscriber).
                let Some(room) = self.participants.get(&source).map(|p| p.room.clone()) else {
                    return;
                };
                let Some(members) = self.rooms.get(&room) else {
                    return;
                };
                for id in members.iter().filter(|m| **m != source) {
                    let Some(p) = self.participants.get_mut(id) else {
                        continue;
                    };
                    match p.forward(source, &data) {
                        Ok(forward) => {
                            if let Some(request) = forward.keyframe_request {
                                self.queue.push_back(request);
                            }
                            if forward.written {
                                self.stats.frames_forwarded.inc();
                                self.dirty.push(*id);
                            }
                            if forward.switched {
                                self.stats.layer_switches.inc();
                            }
                            if let Some(took) = forward.join_took {
                                self.stats.join_to_media.record(took);
                            }
                        }
                        Err(e) => self.failures.push((*id, e)),
                    }
                }
                self.stats
                    .forward_delay
                    .record(Instant::now().saturating_duration_since(data.network_time));
                while let Some((id, e)) = self.failures.pop() {
                    self.failed(id, e);
                }
            }
            Propagated::Chat { source, text } => self.relay_chat(source, &text),
            Propagated::KeyframeRequest {
                source,
                source_mid,
                rid,
                kind,
            } => {
                if let Some(p) = self.participants.get_mut(&source) {
                    p.request_keyframe(source_mid, rid, kind, now);
                    self.dirty.push(source);
                }
            }
        }
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

    fn timeouts(&mut self, now: Instant) {
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
                .filter(|p| p.overflowed)
                .map(|p| (p.id, LeaveReason::Disconnected, None)),
        );
    }

    /// Picks each subscriber's simulcast layers from its bandwidth estimate, and refreshes the
    /// room gauges.
    fn rebalance(&mut self) {
        self.stats.rooms.set(self.rooms.len() as i64);
        self.stats.publishers.set(
            self.participants
                .values()
                .filter(|p| !p.tracks_in.is_empty())
                .count() as i64,
        );
        self.stats.subscribers.set(
            self.participants
                .values()
                .filter(|p| {
                    p.tracks_out
                        .iter()
                        .any(|t| t.kind == str0m::media::MediaKind::Video)
                })
                .count() as i64,
        );
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for id in ids {
            let Some(estimate) = self.participants.get(&id).and_then(|p| p.estimate_bps) else {
                continue;
            };
            let sources: Vec<(ParticipantId, str0m::media::Mid)> =
                match self.participants.get_mut(&id) {
                    Some(p) => p.video_out().map(|t| (t.source, t.source_mid)).collect(),
                    None => continue,
                };
            if sources.is_empty() {
                continue;
            }
            let share = estimate / sources.len() as u64;
            let mut choices = Vec::with_capacity(sources.len());
            let mut desired = 0;
            for (source, mid) in &sources {
                let track = self
                    .participants
                    .get(source)
                    .and_then(|p| p.tracks_in.iter().find(|t| t.mid == *mid));
                let Some(track) = track else {
                    choices.push(None);
                    continue;
                };
                if track.layers.is_empty() {
                    desired += track.total.bps;
                    choices.push(None);
                } else {
                    desired += track.layers.top_bps();
                    choices.push(track.layers.choose(share));
                }
            }
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            for (track, choice) in p.video_out().zip(choices) {
                if choice.is_some() {
                    track.selection.target = choice;
                }
            }
            if let Some(rtc) = p.rtc.as_mut() {
                // Ask the estimator to probe for what the best layers need, with headroom for
                // RTP/SRTP overhead and retransmissions.
                let desired = desired + desired / 4;
                rtc.bwe().set_bitrate(
                    Bitrate::bps(MIN_VIDEO_BPS),
                    Bitrate::bps(desired.max(MIN_VIDEO_BPS)),
                );
            }
        }
    }

    fn remove_gone(&mut self) {
        while let Some((id, reason, error)) = self.gone.pop() {
            let Some(mut p) = self.participants.remove(&id) else {
                continue;
            };
            if let Some(error) = error {
                p.tell(error.to_message(true));
            }
            if let Some(rtc) = p.rtc.as_mut() {
                rtc.disconnect();
            }
            for addr in &p.remote_addrs {
                self.by_addr.remove(addr);
            }
            self.stats.participants.dec();
            if let Some(meeting) = self.meetings.get_mut(&p.room) {
                let effects = meeting.leave(id.0, Instant::now());
                let room = p.room.clone();
                self.apply(&room, effects);
            }
            if let Some(members) = self.rooms.get_mut(&p.room) {
                members.retain(|m| *m != id);
                if members.is_empty() {
                    self.rooms.remove(&p.room);
                }
            }
            // A meeting no one is in (room or waiting room) is forgotten, unless it must keep
            // barring an expelled user or stay locked.
            if !self.participants.values().any(|o| o.room == p.room)
                && self.meetings.get(&p.room).is_some_and(|m| m.forgettable())
            {
                self.meetings.remove(&p.room);
            }
            let others: Vec<ParticipantId> = self.rooms.get(&p.room).cloned().unwrap_or_default();
            for other in others {
                if let Some(o) = self.participants.get_mut(&other) {
                    o.unsubscribe_all_from(id);
                    o.tell(ServerMessage::ParticipantLeft {
                        v: PROTOCOL_VERSION,
                        participant_id: id.to_string(),
                        reason,
                    });
                    self.dirty.push(other);
                }
            }
            tracing::info!(participant = %id, ?reason, "participant left");
        }
        if !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for id in dirty {
                self.drive(id);
            }
        }
    }

    fn shutdown(&mut self, reason: &str) {
        for p in self.participants.values_mut() {
            p.tell(ServerMessage::Closing {
                v: PROTOCOL_VERSION,
                reason: reason.to_string(),
            });
            if let Some(rtc) = p.rtc.as_mut() {
                rtc.disconnect();
            }
        }
        self.participants.clear();
        self.rooms.clear();
        self.by_addr.clear();
        self.stats.participants.set(0);
    }
}

/// A join as the engine needs it.
#[derive(Debug)]
struct Joining {
    role: Role,
    user: String,
    token_expires: Instant,
    display_name: Option<DisplayName>,
    remembered: Option<meeting::Memory>,
}

/// A refused join or host action, for the client.
fn refusal(r: meeting::Refusal) -> ProtocolError {
    use meeting::Refusal;
    let code = match r {
        Refusal::NotHost => ErrorCode::NotHost,
        Refusal::Locked => ErrorCode::MeetingLocked,
        Refusal::Expelled => ErrorCode::Expelled,
        Refusal::Ended => ErrorCode::MeetingEnded,
        Refusal::NoSuchParticipant => ErrorCode::NoSuchParticipant,
    };
    ProtocolError::new(code, r.message())
}

/// Why the node removes someone, for their screen.
fn removal(reason: meeting::EndReason) -> ProtocolError {
    use meeting::EndReason;
    let (code, message) = match reason {
        EndReason::Denied => (
            ErrorCode::Denied,
            "the host did not admit you to this meeting",
        ),
        EndReason::Expelled => (
            ErrorCode::Expelled,
            "a host removed you from this meeting; you cannot rejoin it",
        ),
        EndReason::Idle => (
            ErrorCode::IdleTimeout,
            "you were disconnected after a period without activity (the clinic's automatic logoff)",
        ),
        EndReason::TokenExpired => (
            ErrorCode::TokenExpired,
            "your link has expired; ask the clinic for a new one",
        ),
        EndReason::MaxDuration => (
            ErrorCode::MeetingEnded,
            "the meeting reached its maximum duration and has ended",
        ),
        EndReason::NoHost => (
            ErrorCode::MeetingEnded,
            "the meeting ended because no host was present",
        ),
        EndReason::EndedByHost => (ErrorCode::MeetingEnded, "the host ended the meeting"),
        EndReason::Cancelled => return ProtocolError::visit_cancelled(),
        EndReason::OpenedElsewhere => (
            ErrorCode::LinkOpenedElsewhere,
            "your link was opened in another window or on another device; the visit goes on there",
        ),
    };
    ProtocolError::new(code, message)
}

fn new_rtc(crypto: Arc<CryptoProvider>, advertised: SocketAddr) -> Result<Rtc, ProtocolError> {
    let mut rtc = RtcConfig::new()
        .set_crypto_provider(crypto)
        .set_stats_interval(Some(Duration::from_secs(1)))
        // Start where a 720p camera needs to be; the estimate then follows the network.
        .enable_bwe(Some(Bitrate::kbps(2_500)))
        .build(Instant::now());
    let candidate = Candidate::host(advertised, "udp").map_err(|e| {
        ProtocolError::new(
            ErrorCode::Internal,
            format!("the node's media address {advertised} is not usable: {e}"),
        )
    })?;
    rtc.add_local_candidate(candidate);
    Ok(rtc)
}

/// One str0m event of participant `p`; what it means for the others, if anything.
fn on_event(
    p: &mut Participant,
    event: Event,
    now: Instant,
    stats: &EngineStats,
) -> Option<Propagated> {
    match event {
        Event::Connected => {
            p.connected = true;
            stats.connected.inc();
            stats
                .srtp_sessions
                .with_label_values(&["AEAD_AES_256_GCM"])
                .inc();
            stats.join_to_media.record(p.joined_at.elapsed());
            p.tell(ServerMessage::MediaConnected {
                v: PROTOCOL_VERSION,
                // The policy provider withholds SRTP keys from any other profile, so a
                // completed connection has exactly this one.
                srtp_profile: "AEAD_AES_256_GCM".into(),
            });
            None
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            if let Some(rtc) = p.rtc.as_mut() {
                rtc.disconnect();
            }
            None
        }
        Event::MediaAdded(added) => p.media_added(added.mid, added.kind, added.direction),
        Event::MediaData(data) => {
            if let Some(took) = p.first_media() {
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
        Event::ChannelData(data) => {
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
                    p.tell(
                        ProtocolError::new(
                            ErrorCode::ChatRefused,
                            match refusal {
                                ChatRefusal::TooLong => "chat messages are at most 2,000 bytes",
                                ChatRefusal::TooFast => {
                                    "too many chat messages; wait a few seconds"
                                }
                                ChatRefusal::NotText => "chat messages are UTF-8 text",
                            },
                        )
                        .to_message(false),
                    );
                    None
                }
            }
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            p.estimate_bps = Some(estimate.as_u64());
            None
        }
        Event::PeerStats(peer) => {
            if let Some(rtt) = peer.rtt {
                stats.rtt.observe(rtt.as_secs_f64());
            }
            if let Some(loss) = peer.ingress_loss_fraction {
                stats
                    .loss
                    .with_label_values(&["ingress"])
                    .observe(f64::from(loss));
            }
            if let Some(loss) = peer.egress_loss_fraction {
                stats
                    .loss
                    .with_label_values(&["egress"])
                    .observe(f64::from(loss));
            }
            None
        }
        Event::MediaIngressStats(ingress) => {
            let kind = p
                .tracks_in
                .iter()
                .find(|t| t.mid == ingress.mid)
                .map(|t| t.kind);
            let (label, clock) = match kind {
                Some(str0m::media::MediaKind::Audio) => ("audio", 48_000.0),
                Some(str0m::media::MediaKind::Video) => ("video", 90_000.0),
                None => return None,
            };
            stats
                .jitter
                .with_label_values(&[label])
                .observe(f64::from(ingress.jitter) / clock);
            None
        }
        Event::MediaEgressStats(egress) => {
            let delta = p.feedback_delta(
                egress.mid,
                egress.rid,
                [egress.nacks, egress.plis, egress.firs],
            );
            for (kind, n) in ["nack", "pli", "fir"].iter().zip(delta) {
                if n > 0 {
                    stats.feedback.with_label_values(&[kind]).inc_by(n);
                }
            }
            None
        }
        _ => None,
    }
}
