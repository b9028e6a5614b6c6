//! The meeting's rules under any sequence of requests and any passage of time: what a BAA
//! promises (the expelled stay out, a lock holds, only hosts act, an ended meeting takes no
//! one, nobody is at once waiting and in the room, no visit outlives its maximum duration).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{Effect, Meeting, Policy, Refusal};
use bedside_crds::join::Role;

const USERS: [&str; 4] = ["u-clinician", "u-patient", "u-family", "u-stranger"];
const MAX_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum Step {
    Join { user: usize, host: bool },
    Admit { actor: u64, target: u64 },
    Deny { actor: u64, target: u64 },
    Lock { actor: u64, locked: bool },
    Expel { actor: u64, target: u64 },
    Mute { actor: u64, target: Option<u64> },
    End { actor: u64 },
    Leave { id: u64 },
    Activity { id: u64 },
    Wait { secs: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    // Ids name connections that joined (1..) or never did; the numbers stay small so that
    // actions mostly hit someone.
    let id = 0u64..8;
    prop_oneof![
        3 => (0..USERS.len(), any::<bool>()).prop_map(|(user, host)| Step::Join { user, host }),
        2 => (id.clone(), id.clone()).prop_map(|(actor, target)| Step::Admit { actor, target }),
        1 => (id.clone(), id.clone()).prop_map(|(actor, target)| Step::Deny { actor, target }),
        1 => (id.clone(), any::<bool>()).prop_map(|(actor, locked)| Step::Lock { actor, locked }),
        1 => (id.clone(), id.clone()).prop_map(|(actor, target)| Step::Expel { actor, target }),
        1 => (id.clone(), proptest::option::of(id.clone()))
            .prop_map(|(actor, target)| Step::Mute { actor, target }),
        1 => id.clone().prop_map(|actor| Step::End { actor }),
        1 => id.clone().prop_map(|id| Step::Leave { id }),
        1 => id.prop_map(|id| Step::Activity { id }),
        2 => (0u64..900).prop_map(|secs| Step::Wait { secs }),
    ]
}

/// What the test knows from the outside: who was expelled, who was let in once.
#[derive(Default)]
struct Seen {
    expelled: HashSet<&'static str>,
    let_in: HashSet<&'static str>,
    user_of: Vec<&'static str>,
}

fn host_action(meeting: &mut Meeting, step: &Step) -> Option<Result<Vec<Effect>, Refusal>> {
    Some(match *step {
        Step::Admit { actor, target } => meeting.admit(actor, target),
        Step::Deny { actor, target } => meeting.deny(actor, target),
        Step::Lock { actor, locked } => meeting.lock(actor, locked),
        Step::Expel { actor, target } => meeting.expel(actor, target),
        Step::Mute { actor, target } => meeting.mute(actor, target),
        Step::End { actor } => meeting.end(actor),
        _ => return None,
    })
}

fn actor(step: &Step) -> Option<u64> {
    match *step {
        Step::Admit { actor, .. }
        | Step::Deny { actor, .. }
        | Step::Lock { actor, .. }
        | Step::Expel { actor, .. }
        | Step::Mute { actor, .. }
        | Step::End { actor } => Some(actor),
        _ => None,
    }
}

fn check_join(
    meeting: &mut Meeting,
    seen: &mut Seen,
    user: usize,
    host: bool,
    now: Instant,
) -> Result<(), TestCaseError> {
    let name = USERS[user];
    let (was_ended, was_locked) = (meeting.ended(), meeting.locked());
    let id = seen.user_of.len() as u64 + 1;
    let role = if host { Role::Host } else { Role::Participant };
    let joined = meeting.join(id, name, role, now + MAX_DURATION * 2, now);
    seen.user_of.push(name);
    if was_ended {
        prop_assert_eq!(joined, Err(Refusal::Ended), "an ended meeting takes no one");
    } else if seen.expelled.contains(name) {
        prop_assert_eq!(joined, Err(Refusal::Expelled), "the expelled stay out");
    } else if was_locked && !seen.let_in.contains(name) {
        prop_assert_eq!(joined, Err(Refusal::Locked), "a lock keeps newcomers out");
    } else {
        let effects = joined.map_err(|r| TestCaseError::fail(format!("{name}: {r:?}")))?;
        let enters = host || seen.let_in.contains(name);
        prop_assert_eq!(effects.contains(&Effect::Admit(id)), enters);
        prop_assert_eq!(
            meeting.is_admitted(id),
            enters,
            "only hosts and the let-in enter"
        );
        if enters {
            seen.let_in.insert(name);
        }
    }
    Ok(())
}

fn check_host_action(
    meeting: &mut Meeting,
    seen: &mut Seen,
    step: &Step,
) -> Result<(), TestCaseError> {
    let (was_ended, actor_hosts) = (
        meeting.ended(),
        actor(step).is_some_and(|a| meeting.is_host(a)),
    );
    let Some(outcome) = host_action(meeting, step) else {
        return Ok(());
    };
    if was_ended {
        prop_assert_eq!(outcome, Err(Refusal::Ended));
    } else if !actor_hosts {
        prop_assert_eq!(outcome, Err(Refusal::NotHost), "only hosts act");
    } else if let Ok(effects) = outcome {
        for effect in effects {
            match effect {
                Effect::Admit(target) => {
                    seen.let_in.insert(seen.user_of[target as usize - 1]);
                }
                Effect::Remove(target, super::EndReason::Expelled) => {
                    let user = seen.user_of[target as usize - 1];
                    seen.expelled.insert(user);
                    seen.let_in.remove(user);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn check_state(meeting: &Meeting, started: Instant, now: Instant) -> Result<(), TestCaseError> {
    let waiting: HashSet<u64> = meeting.waiting().into_iter().collect();
    prop_assert!(waiting.iter().all(|id| !meeting.is_admitted(*id)));
    prop_assert!(meeting.hosts().iter().all(|id| !waiting.contains(id)));
    let mut users: Vec<&str> = meeting.members.values().map(|m| m.user.as_str()).collect();
    users.sort_unstable();
    let before = users.len();
    users.dedup();
    prop_assert_eq!(users.len(), before, "one connection per link");
    if meeting.ended() {
        prop_assert!(meeting.members.is_empty(), "an ended meeting is empty");
    }
    if now.saturating_duration_since(started) >= MAX_DURATION {
        prop_assert!(meeting.ended(), "no visit outlives its maximum duration");
    }
    let mut placed_again = Meeting::new(meeting.policy, now);
    placed_again.restore(&meeting.memory());
    prop_assert_eq!(
        placed_again.memory(),
        meeting.memory(),
        "the memory keeps it all"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn the_rules_hold_under_any_requests_and_any_time(steps in proptest::collection::vec(step(), 1..60)) {
        let started = Instant::now();
        let policy = Policy::new(Duration::from_secs(300), MAX_DURATION);
        let (mut meeting, mut now, mut seen) = (Meeting::new(policy, started), started, Seen::default());
        for step in &steps {
            match *step {
                Step::Join { user, host } => check_join(&mut meeting, &mut seen, user, host, now)?,
                Step::Leave { id } => {
                    meeting.leave(id, now);
                }
                Step::Activity { id } => meeting.activity(id, now),
                Step::Wait { secs } => {
                    now += Duration::from_secs(secs);
                    meeting.tick(now);
                }
                _ => check_host_action(&mut meeting, &mut seen, step)?,
            }
            check_state(&meeting, started, now)?;
        }
    }
}
