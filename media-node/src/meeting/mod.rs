//! One meeting's rules under a BAA, as a state machine without sockets or clocks: who may
//! enter (waiting room, lock, expelled users, the end), what a host may do (admit, deny, lock,
//! expel, mute, stop a screen share, end), and when a meeting or a participant times out
//! (idle timeout, maximum duration with a warning, no host left, token expiry).
//!
//! The engine feeds it requests and the time, and carries out the [`Effect`]s it returns; the
//! node, not the web page, is where the rules hold. Tests drive it with a fake clock.

pub mod passcode;
#[cfg(test)]
mod properties;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use bedside_crds::join::Role;

/// What a meeting keeps beyond the pod it runs on: a meeting placed again (its pod died or
/// stopped, the room moved) starts from it. Users appear only as [`user_key`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub locked: bool,
    pub ended: bool,
    /// Expelled: they cannot come back.
    pub expelled: BTreeSet<String>,
    /// Admitted once (hosts, and participants a host let in): they come back without waiting,
    /// even into a locked meeting.
    pub admitted: BTreeSet<String>,
    /// Which state is newer, when two are written out of order (the engine's count).
    #[serde(default)]
    pub revision: u64,
}

impl Memory {
    /// Nothing worth keeping.
    pub fn is_empty(&self) -> bool {
        !self.outlives_the_visit() && self.admitted.is_empty()
    }

    /// Worth keeping after everyone left (as the node keeps such a meeting): a lock, an end, an
    /// expelled participant. Who was admitted matters only while the visit goes on.
    pub fn outlives_the_visit(&self) -> bool {
        self.locked || self.ended || !self.expelled.is_empty()
    }
}

/// A user as a meeting remembers them: the token's pseudonymous id, hashed, so the memory
/// kept outside the node (a Kubernetes Lease) does not list who took part.
pub fn user_key(user: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a join came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A visit's or an ad-hoc link.
    Link,
    /// An emergency link of an active BreakGlass (164.312(a)(2)(ii)).
    Emergency,
}

/// A participant's id within the node (the engine's).
pub type Id = u64;

/// The tenant's meeting settings, as the node enforces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// No media and no signaling for this long drops a participant (at most 15 min).
    pub idle_timeout: Duration,
    /// The meeting ends this long after it starts.
    pub max_duration: Duration,
    /// Everyone is warned this long before the maximum duration.
    pub warn_before: Duration,
    /// A meeting with no host left ends after this.
    pub hostless_grace: Duration,
}

impl Policy {
    pub fn new(idle_timeout: Duration, max_duration: Duration) -> Self {
        Self {
            idle_timeout,
            max_duration,
            warn_before: Duration::from_secs(300).min(max_duration / 4),
            hostless_grace: Duration::from_secs(300),
        }
    }
}

/// Why a request is refused; each has a code for the client and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A host action from someone who is not a host.
    NotHost,
    /// The meeting is locked: no new joins, not even to the waiting room.
    Locked,
    /// This user was expelled from this meeting.
    Expelled,
    /// The meeting has ended.
    Ended,
    /// The target of a host action is not in the meeting (or not waiting, for admit/deny).
    NoSuchParticipant,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotHost => "only a host can do that",
            Refusal::Locked => "the host has locked this meeting; no one else can join",
            Refusal::Expelled => "a host removed you from this meeting; you cannot rejoin it",
            Refusal::Ended => "this meeting has ended",
            Refusal::NoSuchParticipant => "that participant is not in this meeting",
        }
    }
}

/// Why someone leaves or the meeting ends: a code for the client and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Denied,
    Expelled,
    Idle,
    TokenExpired,
    MaxDuration,
    NoHost,
    EndedByHost,
    /// The clinic cancelled the visit.
    Cancelled,
    /// The same link joined again (another window or device): the newer connection stays.
    OpenedElsewhere,
}

impl EndReason {
    pub fn code(self) -> &'static str {
        match self {
            EndReason::Denied => "denied",
            EndReason::Expelled => "expelled",
            EndReason::Idle => "idle-timeout",
            EndReason::TokenExpired => "token-expired",
            EndReason::MaxDuration => "max-duration",
            EndReason::NoHost => "no-host",
            EndReason::EndedByHost => "ended-by-host",
            EndReason::Cancelled => "visit-cancelled",
            EndReason::OpenedElsewhere => "link-opened-elsewhere",
        }
    }
}

/// What the engine must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Let the participant's media flow: they are in the room now.
    Admit(Id),
    /// Close the participant's connection, telling them why.
    Remove(Id, EndReason),
    /// Stop forwarding the participant's audio and tell them.
    Mute(Id),
    /// Stop forwarding the participant's screen share and tell them.
    StopShare(Id),
    /// The hosts' view of the waiting room changed.
    WaitingChanged,
    /// The lock changed.
    LockChanged(bool),
    /// The meeting ends in this long.
    Warn(Duration),
    /// Everyone is removed; the meeting is over.
    End(EndReason),
}

#[derive(Debug, Clone)]
struct Member {
    user: String,
    role: Role,
    admitted: bool,
    last_activity: Instant,
    token_expires: Instant,
}

/// One meeting.
#[derive(Debug, Clone)]
pub struct Meeting {
    policy: Policy,
    started: Instant,
    members: BTreeMap<Id, Member>,
    locked: bool,
    /// [`user_key`]s of the expelled.
    expelled: HashSet<String>,
    /// [`user_key`]s of everyone admitted once.
    admitted: HashSet<String>,
    muted: HashSet<Id>,
    warned: bool,
    ended: bool,
    /// When the last host left, while no host is in.
    hostless_since: Option<Instant>,
}

impl Meeting {
    pub fn new(policy: Policy, now: Instant) -> Self {
        debug_assert!(policy.warn_before <= policy.max_duration);
        Self {
            policy,
            started: now,
            members: BTreeMap::new(),
            locked: false,
            expelled: HashSet::new(),
            admitted: HashSet::new(),
            muted: HashSet::new(),
            warned: false,
            ended: false,
            // Patients often arrive before the clinician: the grace starts when a host leaves.
            hostless_since: None,
        }
    }

    /// Nothing to remember once everyone is gone: not locked, no one expelled, not ended.
    pub fn forgettable(&self) -> bool {
        !self.locked && self.expelled.is_empty() && !self.ended
    }

    pub fn locked(&self) -> bool {
        self.locked
    }

    /// What to keep beyond this node.
    pub fn memory(&self) -> Memory {
        Memory {
            locked: self.locked,
            ended: self.ended,
            expelled: self.expelled.iter().cloned().collect(),
            admitted: self.admitted.iter().cloned().collect(),
            revision: 0,
        }
    }

    /// A new meeting picks up where the one it replaces left off.
    pub fn restore(&mut self, memory: &Memory) {
        self.locked = memory.locked;
        self.ended = memory.ended;
        self.expelled.extend(memory.expelled.iter().cloned());
        self.admitted.extend(memory.admitted.iter().cloned());
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    pub fn is_admitted(&self, id: Id) -> bool {
        self.members.get(&id).is_some_and(|m| m.admitted)
    }

    pub fn is_host(&self, id: Id) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| m.admitted && m.role == Role::Host)
    }

    pub fn is_muted(&self, id: Id) -> bool {
        self.muted.contains(&id)
    }

    /// Who waits, in arrival order.
    pub fn waiting(&self) -> Vec<Id> {
        self.members
            .iter()
            .filter(|(_, m)| !m.admitted)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The admitted hosts, who see the waiting room.
    pub fn hosts(&self) -> Vec<Id> {
        self.members
            .iter()
            .filter(|(_, m)| m.admitted && m.role == Role::Host)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A join that passed the token (and passcode) checks. Hosts enter; everyone else waits
    /// for a host to admit them.
    pub fn join(
        &mut self,
        id: Id,
        user: &str,
        role: Role,
        token_expires: Instant,
        now: Instant,
    ) -> Result<Vec<Effect>, Refusal> {
        self.enter(id, user, role, (token_expires, now), Entry::Link)
    }

    /// A join through `entry`: an emergency link (an active BreakGlass, checked by the caller)
    /// enters as a host even a locked meeting; the lock holds for everyone else.
    pub fn enter(
        &mut self,
        id: Id,
        user: &str,
        role: Role,
        (token_expires, now): (Instant, Instant),
        entry: Entry,
    ) -> Result<Vec<Effect>, Refusal> {
        if self.ended {
            return Err(Refusal::Ended);
        }
        let key = user_key(user);
        if self.expelled.contains(&key) {
            return Err(Refusal::Expelled);
        }
        // Someone admitted before (whose connection dropped, or whose pod died) comes back.
        let known = self.admitted.contains(&key);
        if self.locked && !known && entry != Entry::Emergency {
            return Err(Refusal::Locked);
        }
        let admitted = role == Role::Host || known;
        if admitted {
            self.admitted.insert(key);
        }
        // A link admits one person at a time: the same user joining again (a reload, another
        // device, a reconnect before the old connection timed out) takes over; the older
        // connection is told why and leaves.
        let mut effects = self.taken_over_by(user);
        self.members.insert(
            id,
            Member {
                user: user.to_string(),
                role,
                admitted,
                last_activity: now,
                token_expires,
            },
        );
        if admitted {
            if role == Role::Host {
                self.hostless_since = None;
            }
            // A host arriving sees who already waits.
            effects.push(Effect::Admit(id));
            if !self.waiting().is_empty() {
                effects.push(Effect::WaitingChanged);
            }
        } else {
            effects.push(Effect::WaitingChanged);
        }
        Ok(effects)
    }

    /// Removes `user`'s current connections, as a new one of theirs arrives.
    fn taken_over_by(&mut self, user: &str) -> Vec<Effect> {
        let older: Vec<Id> = self
            .members
            .iter()
            .filter(|(_, m)| m.user == user)
            .map(|(id, _)| *id)
            .collect();
        older
            .into_iter()
            .map(|id| {
                self.members.remove(&id);
                self.muted.remove(&id);
                Effect::Remove(id, EndReason::OpenedElsewhere)
            })
            .collect()
    }

    /// The clinic cancelled the visit: everyone leaves, and the meeting stays ended.
    pub fn cancel(&mut self) -> Vec<Effect> {
        if self.ended {
            return Vec::new();
        }
        self.finish(EndReason::Cancelled)
    }

    fn host_only(&self, actor: Id) -> Result<(), Refusal> {
        if self.ended {
            return Err(Refusal::Ended);
        }
        if self.is_host(actor) {
            Ok(())
        } else {
            Err(Refusal::NotHost)
        }
    }

    fn waiting_target(&self, target: Id) -> Result<(), Refusal> {
        match self.members.get(&target) {
            Some(m) if !m.admitted => Ok(()),
            _ => Err(Refusal::NoSuchParticipant),
        }
    }

    pub fn admit(&mut self, actor: Id, target: Id) -> Result<Vec<Effect>, Refusal> {
        self.host_only(actor)?;
        self.waiting_target(target)?;
        if let Some(m) = self.members.get_mut(&target) {
            m.admitted = true;
            self.admitted.insert(user_key(&m.user));
        }
        Ok(vec![Effect::Admit(target), Effect::WaitingChanged])
    }

    pub fn deny(&mut self, actor: Id, target: Id) -> Result<Vec<Effect>, Refusal> {
        self.host_only(actor)?;
        self.waiting_target(target)?;
        self.members.remove(&target);
        Ok(vec![
            Effect::Remove(target, EndReason::Denied),
            Effect::WaitingChanged,
        ])
    }

    pub fn lock(&mut self, actor: Id, locked: bool) -> Result<Vec<Effect>, Refusal> {
        self.host_only(actor)?;
        self.locked = locked;
        Ok(vec![Effect::LockChanged(locked)])
    }

    /// Removes the target, who cannot rejoin this meeting with any token for the same user.
    pub fn expel(&mut self, actor: Id, target: Id) -> Result<Vec<Effect>, Refusal> {
        self.host_only(actor)?;
        let member = self
            .members
            .remove(&target)
            .ok_or(Refusal::NoSuchParticipant)?;
        let key = user_key(&member.user);
        self.admitted.remove(&key);
        self.expelled.insert(key);
        self.muted.remove(&target);
        let mut effects = vec![Effect::Remove(target, EndReason::Expelled)];
        if !member.admitted {
            effects.push(Effect::WaitingChanged);
        }
        Ok(effects)
    }

    /// Mutes one admitted participant, or everyone but the host who asks.
    pub fn mute(&mut self, actor: Id, target: Option<Id>) -> Result<Vec<Effect>, Refusal> {
        self.host_only(actor)?;
        let targets: Vec<Id> = match target {
            Some(t) if self.is_admitted(t) => vec![t],
            Some(_) => return Err(Refusal::NoSuchParticipant),
            None => self
                .members
                .iter()
                .filter(|(id, m)| m.admitted && **id != actor)
                .map(|(id, _)| *id)
                .collect(),
        };
        let mut effects = Vec::new();
        for t in targets {
            if self.muted.insert(t) {
                effects.push(Effect::Mute(t));
            }
        }
        Ok(effects)
    }

    /// A participant unmutes themselves (hosts mute; only the participant unmutes).
    pub fn unmute_self(&mut self, id: Id) {
        self.muted.remove(&id);
    }

    pub fn stop_share(&mut self, actor: Id, target: Id) -> Result<Vec<Effect>, Refusal> {
        self.host_only(actor)?;
        if !self.is_admitted(target) {
            return Err(Refusal::NoSuchParticipant);
        }
        Ok(vec![Effect::StopShare(target)])
    }

    pub fn end(&mut self, actor: Id) -> Result<Vec<Effect>, Refusal> {
        self.host_only(actor)?;
        Ok(self.finish(EndReason::EndedByHost))
    }

    fn finish(&mut self, reason: EndReason) -> Vec<Effect> {
        self.ended = true;
        self.members.clear();
        self.muted.clear();
        vec![Effect::End(reason)]
    }

    /// Media or signaling from the participant: they are not idle.
    pub fn activity(&mut self, id: Id, now: Instant) {
        if let Some(m) = self.members.get_mut(&id) {
            m.last_activity = now;
        }
    }

    /// The participant left or disconnected.
    pub fn leave(&mut self, id: Id, now: Instant) -> Vec<Effect> {
        let Some(member) = self.members.remove(&id) else {
            return Vec::new();
        };
        self.muted.remove(&id);
        if self.hosts().is_empty() && member.role == Role::Host && self.hostless_since.is_none() {
            self.hostless_since = Some(now);
        }
        if member.admitted {
            Vec::new()
        } else {
            vec![Effect::WaitingChanged]
        }
    }

    /// Timeouts at `now`: idle participants and expired tokens are removed; the meeting is
    /// warned before and ended at its maximum duration, or ended when no host came back.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        if self.ended {
            return Vec::new();
        }
        let age = now.saturating_duration_since(self.started);
        if age >= self.policy.max_duration {
            return self.finish(EndReason::MaxDuration);
        }
        if let Some(since) = self.hostless_since
            && now.saturating_duration_since(since) >= self.policy.hostless_grace
            && !self.members.is_empty()
        {
            return self.finish(EndReason::NoHost);
        }
        let mut effects = Vec::new();
        if !self.warned && age + self.policy.warn_before >= self.policy.max_duration {
            self.warned = true;
            effects.push(Effect::Warn(self.policy.max_duration - age));
        }
        let mut gone = Vec::new();
        for (id, m) in &mut self.members {
            if !m.admitted {
                // Waiting is not idleness: the clock starts when a host lets them in.
                m.last_activity = now;
            }
            if now >= m.token_expires {
                gone.push((*id, EndReason::TokenExpired));
            } else if now.saturating_duration_since(m.last_activity) >= self.policy.idle_timeout {
                gone.push((*id, EndReason::Idle));
            }
        }
        for (id, reason) in gone {
            let was_waiting = !self.is_admitted(id);
            effects.extend(self.leave(id, now));
            if was_waiting && !effects.contains(&Effect::WaitingChanged) {
                effects.push(Effect::WaitingChanged);
            }
            effects.push(Effect::Remove(id, reason));
        }
        effects
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(Duration::from_secs(300), Duration::from_secs(3600))
    }

    fn far(now: Instant) -> Instant {
        now + Duration::from_secs(3600)
    }

    #[test]
    fn a_meeting_placed_again_keeps_its_lock_its_expelled_and_who_was_let_in() {
        let now = Instant::now();
        let mut first = Meeting::new(policy(), now);
        first
            .join(1, "u-host", Role::Host, far(now), now)
            .expect("host");
        first
            .join(2, "u-patient", Role::Participant, far(now), now)
            .expect("waits");
        first.admit(1, 2).expect("admitted");
        first
            .join(3, "u-intruder", Role::Participant, far(now), now)
            .expect("waits");
        first.expel(1, 3).expect("expelled");
        first.lock(1, true).expect("locked");
        let memory = first.memory();
        assert!(!memory.is_empty() && memory.outlives_the_visit());
        assert!(
            !serde_json::to_string(&memory)
                .expect("json")
                .contains("u-patient"),
            "the memory names no user"
        );

        // The pod died; the room starts again elsewhere from its memory.
        let mut again = Meeting::new(policy(), now);
        again.restore(&memory);
        assert!(again.locked());
        let effects = again
            .join(10, "u-patient", Role::Participant, far(now), now)
            .expect("admitted once: back in, though locked");
        assert_eq!(effects, vec![Effect::Admit(10)], "no waiting room again");
        again
            .join(11, "u-host", Role::Host, far(now), now)
            .expect("the host");
        assert_eq!(
            again.join(12, "u-intruder", Role::Host, far(now), now),
            Err(Refusal::Expelled),
            "expelled stays expelled, whatever the token's role"
        );
        assert_eq!(
            again.join(14, "u-stranger", Role::Host, far(now), now),
            Err(Refusal::Locked)
        );
        again.lock(11, false).expect("unlocked");
        assert_eq!(
            again.join(13, "u-newcomer", Role::Participant, far(now), now),
            Ok(vec![Effect::WaitingChanged]),
            "a newcomer still waits"
        );
    }

    #[test]
    fn an_ended_meeting_stays_ended_where_it_is_placed_again() {
        let now = Instant::now();
        let mut first = Meeting::new(policy(), now);
        first
            .join(1, "u-host", Role::Host, far(now), now)
            .expect("host");
        first.end(1).expect("ended");
        let mut again = Meeting::new(policy(), now);
        again.restore(&first.memory());
        assert_eq!(
            again.join(2, "u-host", Role::Host, far(now), now),
            Err(Refusal::Ended)
        );
    }

    #[test]
    fn an_expelled_participant_loses_the_way_back_in() {
        let now = Instant::now();
        let mut meeting = Meeting::new(policy(), now);
        meeting
            .join(1, "u-host", Role::Host, far(now), now)
            .expect("host");
        meeting
            .join(2, "u-patient", Role::Participant, far(now), now)
            .expect("waits");
        meeting.admit(1, 2).expect("admitted");
        meeting.expel(1, 2).expect("expelled");
        let memory = meeting.memory();
        assert_eq!(memory.admitted.len(), 1, "only the host: {memory:?}");
        assert_eq!(memory.expelled.len(), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn meeting() -> (Meeting, Instant) {
        let t0 = Instant::now();
        (Meeting::new(Policy::new(15 * MIN, 60 * MIN), t0), t0)
    }

    fn later(t0: Instant) -> Instant {
        t0 + 600 * MIN
    }

    /// A host (1) and a participant (2) who was admitted.
    fn with_host_and_guest() -> (Meeting, Instant) {
        let (mut m, t0) = meeting();
        m.join(1, "u-host", Role::Host, later(t0), t0)
            .expect("host");
        m.join(2, "u-guest", Role::Participant, later(t0), t0)
            .expect("guest");
        m.admit(1, 2).expect("admit");
        (m, t0)
    }

    #[test]
    fn a_link_opened_again_takes_over_and_the_older_connection_is_told_why() {
        let (mut m, t0) = with_host_and_guest();
        let effects = m
            .join(3, "u-guest", Role::Participant, later(t0), t0)
            .expect("the same link again");
        assert_eq!(
            effects,
            vec![
                Effect::Remove(2, EndReason::OpenedElsewhere),
                Effect::Admit(3)
            ],
            "one person per link: the newer connection stays, admitted as before"
        );
        assert!(!m.is_admitted(2) && m.is_admitted(3));
        // A guest still waiting who opens the link again waits once, on the newer connection.
        m.join(4, "u-waiting", Role::Participant, later(t0), t0)
            .expect("waits");
        let effects = m
            .join(5, "u-waiting", Role::Participant, later(t0), t0)
            .expect("again");
        assert_eq!(
            effects,
            vec![
                Effect::Remove(4, EndReason::OpenedElsewhere),
                Effect::WaitingChanged
            ]
        );
        assert_eq!(m.waiting(), vec![5]);
        assert_eq!(EndReason::OpenedElsewhere.code(), "link-opened-elsewhere");
    }

    #[test]
    fn a_cancelled_visit_ends_for_everyone_and_takes_no_one_after() {
        let (mut m, t0) = with_host_and_guest();
        assert_eq!(m.cancel(), vec![Effect::End(EndReason::Cancelled)]);
        assert!(m.ended() && m.memory().outlives_the_visit());
        assert_eq!(m.cancel(), vec![], "cancelled once");
        assert_eq!(
            m.join(3, "u-host", Role::Host, later(t0), t0),
            Err(Refusal::Ended)
        );
        assert_eq!(EndReason::Cancelled.code(), "visit-cancelled");
    }

    #[test]
    fn non_hosts_wait_until_a_host_admits_them() {
        let (mut m, t0) = meeting();
        let effects = m
            .join(2, "u-guest", Role::Participant, later(t0), t0)
            .expect("waits");
        assert_eq!(effects, [Effect::WaitingChanged]);
        assert!(!m.is_admitted(2));
        let effects = m
            .join(1, "u-host", Role::Host, later(t0), t0)
            .expect("host");
        assert_eq!(effects, [Effect::Admit(1), Effect::WaitingChanged]);
        assert_eq!(m.waiting(), [2]);
        assert_eq!(
            m.admit(1, 2),
            Ok(vec![Effect::Admit(2), Effect::WaitingChanged])
        );
        assert!(m.is_admitted(2));
        assert!(m.waiting().is_empty());
    }

    #[test]
    fn a_host_in_an_empty_waiting_room_hears_nothing_about_it() {
        let (mut m, t0) = meeting();
        assert_eq!(
            m.join(1, "u-host", Role::Host, later(t0), t0),
            Ok(vec![Effect::Admit(1)])
        );
    }

    #[test]
    fn a_denied_participant_is_removed_with_the_reason() {
        let (mut m, t0) = meeting();
        m.join(1, "u-host", Role::Host, later(t0), t0)
            .expect("host");
        m.join(2, "u-guest", Role::Participant, later(t0), t0)
            .expect("guest");
        assert_eq!(
            m.deny(1, 2),
            Ok(vec![
                Effect::Remove(2, EndReason::Denied),
                Effect::WaitingChanged
            ])
        );
        assert_eq!(m.admit(1, 2), Err(Refusal::NoSuchParticipant));
    }

    #[test]
    fn every_host_action_is_refused_to_a_non_host() {
        let (mut m, _) = with_host_and_guest();
        assert_eq!(m.lock(2, true), Err(Refusal::NotHost));
        assert_eq!(m.expel(2, 1), Err(Refusal::NotHost));
        assert_eq!(m.mute(2, None), Err(Refusal::NotHost));
        assert_eq!(m.mute(2, Some(1)), Err(Refusal::NotHost));
        assert_eq!(m.stop_share(2, 1), Err(Refusal::NotHost));
        assert_eq!(m.end(2), Err(Refusal::NotHost));
        assert_eq!(m.admit(2, 3), Err(Refusal::NotHost));
        assert_eq!(m.deny(2, 3), Err(Refusal::NotHost));
        assert!(!m.locked() && !m.ended() && !m.is_muted(1));
    }

    #[test]
    fn a_waiting_host_token_holder_is_a_host_but_a_waiting_participant_is_not() {
        let (mut m, t0) = meeting();
        m.join(2, "u-guest", Role::Participant, later(t0), t0)
            .expect("waits");
        assert_eq!(
            m.lock(2, true),
            Err(Refusal::NotHost),
            "waiting, not a host"
        );
    }

    #[test]
    fn an_emergency_host_enters_a_locked_meeting_and_the_lock_holds_for_everyone_else() {
        let (mut m, t0) = meeting();
        m.join(1, "u-host", Role::Host, later(t0), t0)
            .expect("host joins");
        m.join(2, "u-patient", Role::Participant, later(t0), t0)
            .expect("patient waits");
        m.lock(1, true).expect("locked");
        m.leave(1, t0);
        let effects = m
            .enter(
                3,
                "practitioner.dr-9",
                Role::Host,
                (later(t0), t0),
                Entry::Emergency,
            )
            .expect("the emergency host enters");
        assert!(effects.contains(&Effect::Admit(3)), "{effects:?}");
        assert!(m.is_host(3));
        assert_eq!(
            m.waiting(),
            [2],
            "the patient still waits for a host to admit them"
        );
        assert_eq!(
            m.join(4, "u-stranger", Role::Host, later(t0), t0),
            Err(Refusal::Locked),
            "the lock holds for everyone else"
        );
    }

    #[test]
    fn a_locked_meeting_takes_no_one_not_even_into_the_waiting_room() {
        let (mut m, t0) = with_host_and_guest();
        assert_eq!(m.lock(1, true), Ok(vec![Effect::LockChanged(true)]));
        assert_eq!(
            m.join(3, "u-late", Role::Participant, later(t0), t0),
            Err(Refusal::Locked)
        );
        assert_eq!(
            m.join(4, "u-cohost", Role::Host, later(t0), t0),
            Err(Refusal::Locked)
        );
        m.lock(1, false).expect("unlock");
        assert!(
            m.join(3, "u-late", Role::Participant, later(t0), t0)
                .is_ok()
        );
    }

    #[test]
    fn an_expelled_user_cannot_rejoin_with_any_token() {
        let (mut m, t0) = with_host_and_guest();
        assert_eq!(
            m.expel(1, 2),
            Ok(vec![Effect::Remove(2, EndReason::Expelled)])
        );
        assert_eq!(
            m.join(5, "u-guest", Role::Participant, later(t0), t0),
            Err(Refusal::Expelled),
            "a fresh token for the same user is still refused"
        );
        assert_eq!(
            m.join(6, "u-guest", Role::Host, later(t0), t0),
            Err(Refusal::Expelled),
            "even as a host"
        );
        assert!(
            m.join(7, "u-other", Role::Participant, later(t0), t0)
                .is_ok()
        );
    }

    #[test]
    fn mute_one_and_mute_all_spare_the_host_who_asks() {
        let (mut m, t0) = with_host_and_guest();
        m.join(3, "u-third", Role::Participant, later(t0), t0)
            .expect("third");
        m.admit(1, 3).expect("admit");
        assert_eq!(m.mute(1, Some(2)), Ok(vec![Effect::Mute(2)]));
        assert_eq!(
            m.mute(1, None),
            Ok(vec![Effect::Mute(3)]),
            "2 was muted already"
        );
        assert!(!m.is_muted(1));
        m.unmute_self(2);
        assert!(!m.is_muted(2));
        assert_eq!(m.mute(1, Some(9)), Err(Refusal::NoSuchParticipant));
        assert_eq!(m.stop_share(1, 2), Ok(vec![Effect::StopShare(2)]));
    }

    #[test]
    fn ending_removes_everyone_and_no_one_rejoins() {
        let (mut m, t0) = with_host_and_guest();
        assert_eq!(m.end(1), Ok(vec![Effect::End(EndReason::EndedByHost)]));
        assert_eq!(
            m.join(1, "u-host", Role::Host, later(t0), t0),
            Err(Refusal::Ended)
        );
        assert!(m.tick(t0 + 1000 * MIN).is_empty());
    }

    #[test]
    fn an_idle_participant_is_dropped_at_the_idle_timeout_and_activity_resets_it() {
        let (mut m, t0) = with_host_and_guest();
        m.activity(1, t0 + 10 * MIN);
        assert!(m.tick(t0 + 14 * MIN).is_empty());
        let effects = m.tick(t0 + 15 * MIN);
        assert_eq!(effects, [Effect::Remove(2, EndReason::Idle)]);
        assert!(m.is_admitted(1), "the host was active");
        assert_eq!(m.tick(t0 + 25 * MIN), [Effect::Remove(1, EndReason::Idle)]);
    }

    #[test]
    fn waiting_is_not_idleness_and_the_idle_clock_starts_at_admission() {
        let (mut m, t0) = meeting();
        m.join(1, "u-host", Role::Host, later(t0), t0)
            .expect("host");
        m.join(2, "u-guest", Role::Participant, later(t0), t0)
            .expect("guest");
        for minute in 1..=30 {
            m.activity(1, t0 + minute * MIN);
            assert!(
                m.tick(t0 + minute * MIN).is_empty(),
                "minute {minute}: a patient in the waiting room is never idle-kicked"
            );
        }
        m.admit(1, 2).expect("admit");
        m.activity(1, t0 + 40 * MIN);
        assert!(
            m.tick(t0 + 44 * MIN).is_empty(),
            "14 minutes after admission"
        );
        assert_eq!(
            m.tick(t0 + 45 * MIN),
            [Effect::Remove(2, EndReason::Idle)],
            "15 minutes after admission without a sign of life"
        );
    }

    #[test]
    fn a_meeting_is_warned_then_ended_at_its_maximum_duration() {
        let (mut m, t0) = with_host_and_guest();
        for t in [10, 20, 30, 40, 50] {
            m.activity(1, t0 + t * MIN);
            m.activity(2, t0 + t * MIN);
        }
        assert!(m.tick(t0 + 54 * MIN).is_empty());
        assert_eq!(m.tick(t0 + 55 * MIN), [Effect::Warn(5 * MIN)]);
        assert!(m.tick(t0 + 56 * MIN).is_empty(), "warned once");
        assert_eq!(m.tick(t0 + 60 * MIN), [Effect::End(EndReason::MaxDuration)]);
        assert!(m.ended());
    }

    #[test]
    fn a_meeting_whose_hosts_left_ends_after_the_grace_period() {
        let (mut m, t0) = with_host_and_guest();
        assert!(m.leave(1, t0 + MIN).is_empty());
        m.activity(2, t0 + 5 * MIN);
        assert!(m.tick(t0 + 5 * MIN).is_empty());
        assert_eq!(m.tick(t0 + 6 * MIN), [Effect::End(EndReason::NoHost)]);

        // A host who comes back in time saves it.
        let (mut m, t0) = with_host_and_guest();
        m.leave(1, t0 + MIN);
        m.join(3, "u-host", Role::Host, later(t0), t0 + 3 * MIN)
            .expect("back");
        m.activity(2, t0 + 5 * MIN);
        assert!(m.tick(t0 + 7 * MIN).is_empty());
    }

    #[test]
    fn patients_waiting_before_the_clinician_arrives_are_not_ended() {
        let (mut m, t0) = meeting();
        m.join(2, "u-early", Role::Participant, later(t0), t0)
            .expect("waits");
        m.activity(2, t0 + 10 * MIN);
        assert!(m.tick(t0 + 12 * MIN).is_empty());
    }

    #[test]
    fn an_expired_token_ejects_its_holder() {
        let (mut m, t0) = meeting();
        m.join(1, "u-host", Role::Host, later(t0), t0)
            .expect("host");
        m.join(2, "u-guest", Role::Participant, t0 + 2 * MIN, t0)
            .expect("guest");
        assert_eq!(
            m.tick(t0 + 2 * MIN),
            [
                Effect::WaitingChanged,
                Effect::Remove(2, EndReason::TokenExpired)
            ]
        );
    }
}
