//! A BreakGlass's life, decided without I/O: from what the object says, whether its tenant
//! exists, and the time, to its next status, the steps to seal into the audit trail, and
//! whether its emergency link works now.

use std::time::Duration;

use bedside_audit::event::Action;
use bedside_crds::break_glass::{
    APPROVAL_WAIT_MINUTES, BreakGlassSpec, BreakGlassStatus, Granted, MAX_TTL_MINUTES, Phase,
    user_id,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What the decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub name: &'a str,
    pub spec: &'a BreakGlassSpec,
    pub status: &'a BreakGlassStatus,
    pub created: Timestamp,
    pub tenant_found: bool,
    pub now: Timestamp,
}

/// A step of the grant's life, sealed into the tenant's audit trail once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Requested,
    Approved,
    Activated,
    Expired,
    Revoked,
    Refused,
}

impl Step {
    /// Its name in `status.recorded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Requested => "requested",
            Step::Approved => "approved",
            Step::Activated => "activated",
            Step::Expired => "expired",
            Step::Revoked => "revoked",
            Step::Refused => "refused",
        }
    }

    pub fn action(self) -> Action {
        match self {
            Step::Requested => Action::BreakGlassRequested,
            Step::Approved => Action::BreakGlassApproved,
            Step::Activated => Action::BreakGlassActivated,
            Step::Expired => Action::BreakGlassExpired,
            Step::Revoked => Action::BreakGlassRevoked,
            Step::Refused => Action::BreakGlassRefused,
        }
    }

    /// Who took the step, as a user id (`None`: the operator did).
    pub fn actor(self, spec: &BreakGlassSpec) -> Option<String> {
        match self {
            Step::Requested => Some(user_id(&spec.requested_by)),
            Step::Approved => spec.approved_by.as_deref().map(user_id),
            Step::Revoked => spec.revoked_by.as_deref().map(user_id),
            Step::Activated | Step::Expired | Step::Refused => None,
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write (its `recorded` still without this decision's steps: they are
    /// added as they are sealed).
    pub status: BreakGlassStatus,
    /// Steps reached and not yet sealed, in order.
    pub steps: Vec<Step>,
    /// Why it ended, as a closed code for the audit record (expired, revoked or refused).
    pub reason_code: Option<&'static str>,
    /// Whether the emergency link works now (until `status.expiresAt`).
    pub active: bool,
    /// When to look again without a change.
    pub look_again: Option<Duration>,
}

/// How the grant stands, before it is written down.
struct Standing {
    phase: Phase,
    /// Closed code (audit) and words (status) for why it is so.
    code: &'static str,
    message: String,
    look_again: Option<Duration>,
}

pub fn decide(facts: &Facts) -> Decision {
    let mut status = facts.status.clone();
    let standing = match status.phase.filter(|p| p.is_final()) {
        // Over: kept as it ended, for review.
        Some(phase) => Standing {
            phase,
            code: "",
            message: status.message.clone().unwrap_or_default(),
            look_again: None,
        },
        None => standing(facts, &mut status),
    };
    if standing.phase.is_final() && status.ended_at.is_none() {
        status.ended_at = Some(facts.now);
    }
    let active = standing.phase == Phase::Active;
    status.phase = Some(standing.phase);
    status.message = Some(standing.message.clone());
    status.conditions = conditions(facts, &standing);
    let steps = steps(facts, &status, standing.phase);
    Decision {
        status,
        steps,
        reason_code: (standing.phase.is_final() && !standing.code.is_empty())
            .then_some(standing.code),
        active,
        look_again: standing.look_again,
    }
}

fn standing(facts: &Facts, status: &mut BreakGlassStatus) -> Standing {
    let spec = facts.spec;
    if let Some((code, message)) = refusal(facts.name, spec, status.granted.as_ref()) {
        return Standing {
            phase: Phase::Refused,
            code,
            message,
            look_again: None,
        };
    }
    if let Some(by) = &spec.revoked_by {
        return Standing {
            phase: Phase::Revoked,
            code: "revoked",
            message: format!("revoked by {by}; the emergency link no longer works"),
            look_again: None,
        };
    }
    if status.activated_at.is_none() {
        let waited_until = facts.created + SignedDuration::from_mins(APPROVAL_WAIT_MINUTES);
        let waiting = if !facts.tenant_found {
            Some(format!(
                "HealthcareTenant {} is not in this namespace; the request waits for it",
                spec.tenant
            ))
        } else if spec.approval_required && spec.approved_by.is_none() {
            Some(format!(
                "awaiting a second person's approval (set spec.approvedBy); unapproved, it expires at {waited_until}"
            ))
        } else {
            None
        };
        if let Some(message) = waiting {
            if facts.now >= waited_until {
                return Standing {
                    phase: Phase::Expired,
                    code: "not-activated-in-time",
                    message: format!(
                        "expired unused: not activated within {APPROVAL_WAIT_MINUTES} minutes of the request ({message})"
                    ),
                    look_again: None,
                };
            }
            return Standing {
                phase: Phase::Requested,
                code: "",
                message,
                look_again: until(facts.now, waited_until),
            };
        }
        status.activated_at = Some(facts.now);
        status.expires_at =
            Some(facts.now + SignedDuration::from_mins(i64::from(spec.ttl_minutes)));
        status.granted = Some(granted(spec));
    }
    let ends = status.expires_at.unwrap_or(facts.now);
    if facts.now >= ends {
        return Standing {
            phase: Phase::Expired,
            code: "expired",
            message: format!(
                "its time to live ended at {ends}; the emergency link no longer works"
            ),
            look_again: None,
        };
    }
    Standing {
        phase: Phase::Active,
        code: "",
        message: format!(
            "{} may enter visit {} with the emergency link (Secret {}-link) until {ends}",
            spec.clinician, spec.visit, facts.name
        ),
        look_again: until(facts.now, ends),
    }
}

fn until(now: Timestamp, then: Timestamp) -> Option<Duration> {
    Duration::try_from(then.duration_since(now)).ok()
}

fn granted(spec: &BreakGlassSpec) -> Granted {
    Granted {
        visit: spec.visit.clone(),
        clinician: spec.clinician.clone(),
        ttl_minutes: spec.ttl_minutes,
    }
}

/// A rule the schema cannot say (or an API server that did not apply it): a closed code and
/// what to do.
fn refusal(
    name: &str,
    spec: &BreakGlassSpec,
    granted_before: Option<&Granted>,
) -> Option<(&'static str, String)> {
    if name.len() > 63 {
        return Some((
            "name-too-long",
            "the object's name is longer than 63 characters; audit records name it, so create it again with a shorter name".into(),
        ));
    }
    if spec.ttl_minutes == 0 || spec.ttl_minutes > MAX_TTL_MINUTES {
        return Some((
            "ttl-out-of-bounds",
            format!(
                "spec.ttlMinutes must be 1 to {MAX_TTL_MINUTES}: emergency access lasts at most an hour"
            ),
        ));
    }
    if spec.reason.trim().chars().count() < 20 {
        return Some((
            "reason-missing",
            "spec.reason must say why emergency access is needed (at least 20 characters)".into(),
        ));
    }
    let clinician = user_id(&spec.clinician);
    if !bedside_crds::join::is_pseudonymous(&clinician) || !spec.clinician.contains('/') {
        return Some((
            "clinician-not-a-reference",
            "spec.clinician must be Practitioner/<id> or PractitionerRole/<id> with the EHR's opaque id, never a name".into(),
        ));
    }
    if spec.approval_required && spec.approved_by.as_deref() == Some(spec.requested_by.as_str()) {
        return Some((
            "approver-is-requester",
            "spec.approvedBy is the requester: a second person must approve; create a new request"
                .into(),
        ));
    }
    if granted_before.is_some_and(|g| *g != granted(spec)) {
        return Some((
            "grant-changed",
            "the visit, clinician or ttlMinutes changed after the grant became active; the grant ended (create a new request for a new grant)".into(),
        ));
    }
    None
}

/// Every step the grant has reached that is not yet sealed, in the order they happened.
fn steps(facts: &Facts, status: &BreakGlassStatus, phase: Phase) -> Vec<Step> {
    let spec = facts.spec;
    let mut reached = vec![Step::Requested];
    if spec.approval_required && spec.approved_by.is_some() {
        reached.push(Step::Approved);
    }
    if status.activated_at.is_some() {
        reached.push(Step::Activated);
    }
    match phase {
        Phase::Expired => reached.push(Step::Expired),
        Phase::Revoked => reached.push(Step::Revoked),
        Phase::Refused => reached.push(Step::Refused),
        Phase::Requested | Phase::Active => {}
    }
    reached
        .into_iter()
        .filter(|s| !status.recorded.iter().any(|r| r == s.as_str()))
        .collect()
}

fn conditions(facts: &Facts, standing: &Standing) -> Vec<Condition> {
    let spec = facts.spec;
    let phase = standing.phase;
    let approved = match (spec.approval_required, &spec.approved_by) {
        (false, _) => (
            true,
            "NotRequired",
            "no second approval was asked for".to_string(),
        ),
        (true, Some(by)) => (true, "Approved", format!("approved by {by}")),
        (true, None) => (
            false,
            "AwaitingApproval",
            "set spec.approvedBy to approve".into(),
        ),
    };
    let active_reason = match phase {
        Phase::Active => "Active",
        Phase::Requested => "NotYetActive",
        Phase::Expired => "Expired",
        Phase::Revoked => "Revoked",
        Phase::Refused => "Refused",
    };
    let wanted = [
        (
            "Requested",
            true,
            "Requested",
            format!(
                "asked for by {} for incident {}",
                spec.requested_by, spec.incident
            ),
        ),
        ("Approved", approved.0, approved.1, approved.2),
        (
            "Active",
            phase == Phase::Active,
            active_reason,
            standing.message.clone(),
        ),
        (
            "Expired",
            phase == Phase::Expired,
            if phase == Phase::Expired {
                "Expired"
            } else {
                "NotExpired"
            },
            if phase == Phase::Expired {
                standing.message.clone()
            } else {
                "its time to live has not ended".into()
            },
        ),
        (
            "Revoked",
            phase == Phase::Revoked,
            if phase == Phase::Revoked {
                "Revoked"
            } else {
                "NotRevoked"
            },
            if phase == Phase::Revoked {
                standing.message.clone()
            } else {
                "nobody revoked it".into()
            },
        ),
    ];
    wanted
        .into_iter()
        .map(|(type_, ok, reason, message)| {
            let status_word = if ok { "True" } else { "False" };
            let before = facts.status.conditions.iter().find(|c| c.type_ == type_);
            let last_transition_time = match before {
                Some(c) if c.status == status_word => c.last_transition_time.clone(),
                _ => Time(facts.now),
            };
            Condition {
                type_: type_.into(),
                status: status_word.into(),
                reason: reason.into(),
                message,
                last_transition_time,
                observed_generation: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
