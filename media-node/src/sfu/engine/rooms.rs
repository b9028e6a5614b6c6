//! Meetings and who is in them: joins, host actions, leaving, and the meeting's clock. The
//! decisions are the meeting's (`crate::meeting`, pure); this carries out their effects on the
//! participants' connections and signaling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Engine;
use crate::meeting::{self, Meeting};
use crate::protocol::{
    DisplayName, ErrorCode, LeaveReason, PROTOCOL_VERSION, ParticipantInfo, ProtocolError,
    ServerMessage,
};
use crate::sfu::command::{HostAction, Joined};
use crate::sfu::participant::{Participant, ParticipantId};
use crate::sfu::shard::RouteChange;
use bedside_crds::join::Role;

/// How often meetings are checked for timeouts.
const MEETING_TICK: Duration = Duration::from_secs(1);
/// How long an ended meeting is remembered (so no one rejoins it), after its end.
const ENDED_MEETING_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// A join as the engine needs it.
#[derive(Debug)]
pub(super) struct Joining {
    pub role: Role,
    pub user: String,
    pub token_expires: Instant,
    pub display_name: Option<DisplayName>,
    pub remembered: Option<meeting::Memory>,
    pub entry: meeting::Entry,
}

impl Engine {
    pub(super) fn join(
        &mut self,
        room: String,
        joining: Joining,
        events: mpsc::Sender<ServerMessage>,
    ) -> Result<Joined, ProtocolError> {
        let now = self.now;
        let room: Arc<str> = Arc::from(room);
        if self.ended.contains_key(&room) {
            return Err(refusal(meeting::Refusal::Ended));
        }
        self.check_room_size(&room)?;
        let id = self.shard.participant_id(self.next_id);
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
            .enter(
                id.0,
                &joining.user,
                joining.role,
                (joining.token_expires, now),
                joining.entry,
            )
            .map_err(refusal)?;
        self.next_id += 1;
        let mut participant = Participant::new(id, room.clone(), joining.role, events, now);
        participant.display_name = joining.display_name;
        participant.may_relay = self.settings.relay;
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

    fn check_room_size(&self, room: &Arc<str>) -> Result<(), ProtocolError> {
        let present = self
            .participants
            .values()
            .filter(|p| p.room == *room)
            .count();
        if present < self.settings.max_participants {
            return Ok(());
        }
        Err(ProtocolError::new(
            ErrorCode::RoomFull,
            format!(
                "the meeting is full ({} participants, the tenant's limit)",
                self.settings.max_participants
            ),
        ))
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

    pub(super) fn host(
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

    pub(super) fn unmute(&mut self, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.muted = false;
            p.last_activity = self.now;
            if let Some(meeting) = self.meetings.get_mut(&p.room) {
                meeting.unmute_self(id.0);
            }
        }
    }

    /// The rooms with a meeting here, ended ones too: they are remembered (and their rooms
    /// held) for a day.
    pub(super) fn held_rooms(&self) -> Vec<String> {
        let rooms = self.meetings.keys().chain(self.ended.keys());
        rooms.map(|r| r.to_string()).collect()
    }

    /// The clinic cancelled the visit in `room`; true when a meeting was running.
    pub(super) fn cancel(&mut self, room: String) -> bool {
        let room: Arc<str> = room.into();
        let effects = self
            .meetings
            .get_mut(&room)
            .map(|meeting| meeting.cancel())
            .unwrap_or_default();
        let running = !effects.is_empty();
        self.apply(&room, effects);
        running
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
                Effect::LockChanged(locked) => self.tell_room(
                    room,
                    ServerMessage::Locked {
                        v: PROTOCOL_VERSION,
                        locked,
                    },
                ),
                Effect::Warn(left) => self.tell_room(
                    room,
                    ServerMessage::MeetingEnding {
                        v: PROTOCOL_VERSION,
                        in_seconds: left.as_secs(),
                    },
                ),
                Effect::End(reason) => self.end(room, reason),
            }
        }
    }

    /// The meeting is over: everyone in it is removed, and the room remembered as ended.
    fn end(&mut self, room: &Arc<str>, reason: meeting::EndReason) {
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
        self.ended.insert(room.clone(), self.now);
        tracing::info!(reason = reason.code(), "meeting ended");
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
                // The signaling session adds the relay's credential on its way out.
                ice_servers: Vec::new(),
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

    /// Idle participants, expired tokens, maximum durations, hostless meetings.
    pub(super) fn meeting_timeouts(&mut self) {
        let now = self.now;
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

    /// Removes who left or was removed this round: the meeting hears of it, the others stop
    /// receiving their media and are told.
    pub(super) fn remove_gone(&mut self) {
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
            for &(proto, from) in &p.remote_addrs {
                self.by_addr.remove(&(proto, from));
                self.route_changes.push(RouteChange::Released(proto, from));
            }
            self.stats.participants.dec();
            if let Some(meeting) = self.meetings.get_mut(&p.room) {
                let effects = meeting.leave(id.0, self.now);
                self.apply(&p.room, effects);
            }
            self.leave_room(&p.room, id, reason);
            tracing::info!(participant = %id, ?reason, "participant left");
        }
        if !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for id in dirty {
                self.drive(id);
            }
        }
    }

    /// `id` is out of `room`: the others are told and stop receiving its tracks.
    fn leave_room(&mut self, room: &Arc<str>, id: ParticipantId, reason: LeaveReason) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.retain(|m| *m != id);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
        // A meeting no one is in (room or waiting room) is forgotten, unless it must keep
        // barring an expelled user or stay locked.
        if !self.participants.values().any(|o| o.room == *room)
            && self.meetings.get(room).is_some_and(|m| m.forgettable())
        {
            self.meetings.remove(room);
        }
        let others: Vec<ParticipantId> = self.rooms.get(room).cloned().unwrap_or_default();
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
    }
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
