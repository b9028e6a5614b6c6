//! A visit: what a clinic or its scheduling system books, and the links it hands out.
//!
//! A visit is a start, a duration, a host (a practitioner) and the others invited, each a FHIR
//! reference and a role, never a name. Booking one mints one join link per person, bound to
//! the visit (its room) and to their role, working only inside the visit's window: from
//! `opens_before` the start to `grace` after the end. The passcode comes apart from the links.
//!
//! Booking writes nothing: the schedule stays in the EHR, which holds it already, and bedside
//! keeps no appointment data (no PHI at rest). Everything here is pure; the commands and APIs
//! that book visits read the tenant's key and clock and call [`book`].

pub mod api;
pub mod fhir;

use crate::join::{self, JoinClaims, MAX_GRACE_SECS, MAX_OPENS_BEFORE_SECS, Role, TokenError};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Who else is invited, besides the host.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InviteeRole {
    Patient,
    Interpreter,
    Caregiver,
    /// Sees and hears, never sends (a student, a supervisor).
    Observer,
}

impl InviteeRole {
    fn join_role(self) -> Role {
        match self {
            InviteeRole::Observer => Role::Observer,
            _ => Role::Participant,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InviteeRole::Patient => "patient",
            InviteeRole::Interpreter => "interpreter",
            InviteeRole::Caregiver => "caregiver",
            InviteeRole::Observer => "observer",
        }
    }

    /// The FHIR resource types a reference for this role may point at.
    fn resource_types(self) -> &'static [&'static str] {
        match self {
            InviteeRole::Patient => &["Patient"],
            InviteeRole::Caregiver => &["RelatedPerson", "Patient"],
            InviteeRole::Interpreter | InviteeRole::Observer => {
                &["Practitioner", "PractitionerRole", "RelatedPerson"]
            }
        }
    }
}

/// The resource types a host reference may point at.
const HOST_TYPES: &[&str] = &["Practitioner", "PractitionerRole"];

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Invitee {
    /// A FHIR reference such as `Patient/8c1f2a`: pseudonymous, never a name.
    pub reference: String,
    pub role: InviteeRole,
}

/// What the booker asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisitRequest {
    pub start: Timestamp,
    pub duration: Duration,
    /// The practitioner who hosts: `Practitioner/<id>` or `PractitionerRole/<id>`.
    pub host: String,
    pub invitees: Vec<Invitee>,
}

/// The tenant's limits and the link window's margins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisitPolicy {
    /// The tenant (HealthcareTenant name) whose key signs the links.
    pub tenant: String,
    /// Where the tenant's web client is served, e.g. `https://meet.mercy.example`.
    pub base_url: String,
    /// The tenant's `spec.meetings.maxDuration`.
    pub max_duration: Duration,
    /// The tenant's `spec.meetings.maxParticipants` (the host included).
    pub max_participants: u32,
    /// How long before the start the links begin to work.
    pub opens_before: Duration,
    /// How long after the scheduled end the links keep working.
    pub grace: Duration,
}

/// Default margin before the start: patients come early and check their camera.
pub const DEFAULT_OPENS_BEFORE: Duration = Duration::from_secs(15 * 60);
/// Default margin after the end: visits run over.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(15 * 60);

/// When the links work.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub opens: Timestamp,
    pub closes: Timestamp,
}

/// One person's link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IssuedLink {
    pub reference: String,
    /// `host`, or the invitee's role.
    pub role: String,
    pub link: String,
}

/// A booked visit: what the booker stores on the appointment and sends out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssuedVisit {
    /// The visit's id, also its room.
    pub id: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub window: Window,
    /// Send it on another channel than the links (a text message, the appointment letter).
    pub passcode: String,
    pub max_participants: u32,
    /// Which issue of the links these are: 0 when booked, one more at each reissue (the
    /// older links are then refused).
    #[serde(default)]
    pub generation: u32,
    pub host: IssuedLink,
    pub invitees: Vec<IssuedLink>,
}

impl IssuedVisit {
    /// The scheduled length in whole minutes.
    pub fn minutes(&self) -> i64 {
        (self.end.as_second() - self.start.as_second()) / 60
    }
}

/// Why a visit cannot be booked, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VisitError {
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("cannot sign the visit's links: {0}")]
    Key(#[from] TokenError),
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> VisitError {
    VisitError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Whether `id` can be a visit id (a room name): printable, short, no spaces; never free text.
pub fn is_visit_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A fresh visit id: 96 random bits, so ids cannot be guessed from one another.
pub fn new_visit_id() -> Result<String, VisitError> {
    let mut bytes = [0u8; 12];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| invalid("id", "the system's random number generator failed"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("visit-{hex}"))
}

/// Books a visit with id `id` at `now`: checks the request against the policy and signs a link
/// for each person with `key`.
pub fn book(
    request: &VisitRequest,
    policy: &VisitPolicy,
    key: &[u8],
    id: &str,
    now: Timestamp,
) -> Result<IssuedVisit, VisitError> {
    issue(request, policy, key, (id, 0), now)
}

/// Signs the links of visit `id` again, as issue `generation` (a reissue: the caller has made
/// the older issues refused), with the same checks as a booking.
pub fn issue(
    request: &VisitRequest,
    policy: &VisitPolicy,
    key: &[u8],
    (id, generation): (&str, u32),
    now: Timestamp,
) -> Result<IssuedVisit, VisitError> {
    let window = check(request, policy, now, generation > 0)?;
    let end = request.start + request.duration;
    let sign = |reference: &str, role: Role| -> Result<String, VisitError> {
        let claims = JoinClaims {
            sub: user_id(reference),
            aud: policy.tenant.clone(),
            room: id.to_string(),
            role,
            exp: seconds(window.closes),
            nbf: Some(seconds(window.opens)),
            start: Some(seconds(request.start)),
            generation: (generation > 0).then_some(generation),
            break_glass: None,
        };
        Ok(join::link(
            &policy.base_url,
            id,
            &join::issue(&claims, key)?,
            None,
        ))
    };
    let host = IssuedLink {
        reference: request.host.clone(),
        role: "host".into(),
        link: sign(&request.host, Role::Host)?,
    };
    let invitees = request
        .invitees
        .iter()
        .map(|i| {
            Ok(IssuedLink {
                reference: i.reference.clone(),
                role: i.role.as_str().into(),
                link: sign(&i.reference, i.role.join_role())?,
            })
        })
        .collect::<Result<_, VisitError>>()?;
    Ok(IssuedVisit {
        id: id.to_string(),
        start: request.start,
        end,
        window,
        passcode: join::passcode(key, id),
        max_participants: policy.max_participants,
        generation,
        host,
        invitees,
    })
}

/// Every rule a booking must meet; the window when it does.
fn check(
    request: &VisitRequest,
    policy: &VisitPolicy,
    now: Timestamp,
    reissue: bool,
) -> Result<Window, VisitError> {
    check_margins(policy)?;
    if request.duration.is_zero() {
        return Err(invalid("duration", "must be longer than zero, e.g. 30m"));
    }
    if request.duration > policy.max_duration {
        return Err(invalid(
            "duration",
            format!(
                "{} is longer than this clinic's maxDuration of {} (spec.meetings.maxDuration)",
                minutes(request.duration),
                minutes(policy.max_duration)
            ),
        ));
    }
    // A minute of slack for a visit booked "now" by a clock slightly ahead. A reissue may come
    // during the visit; its window must still be open.
    let closes = request.start + request.duration + policy.grace;
    if reissue && closes < now {
        return Err(invalid(
            "start",
            "this visit's window has closed; book a new visit instead",
        ));
    }
    if !reissue && request.start + Duration::from_secs(60) < now {
        return Err(invalid(
            "start",
            format!(
                "{} is in the past; book visits from now on",
                request.start.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
        ));
    }
    check_people(request, policy)?;
    Ok(Window {
        opens: request.start - policy.opens_before,
        closes: request.start + request.duration + policy.grace,
    })
}

fn check_margins(policy: &VisitPolicy) -> Result<(), VisitError> {
    if policy.opens_before.as_secs() > MAX_OPENS_BEFORE_SECS {
        return Err(invalid("opensBefore", "may be at most 1h"));
    }
    if policy.grace.as_secs() > MAX_GRACE_SECS {
        return Err(invalid("grace", "may be at most 1h"));
    }
    Ok(())
}

fn check_people(request: &VisitRequest, policy: &VisitPolicy) -> Result<(), VisitError> {
    check_reference("host", &request.host, HOST_TYPES)?;
    if request.invitees.is_empty() {
        return Err(invalid(
            "participants",
            "a visit needs someone besides the host (e.g. a patient, Patient/<id>)",
        ));
    }
    let people = request.invitees.len() + 1;
    if people > policy.max_participants as usize {
        return Err(invalid(
            "participants",
            format!(
                "{people} people (the host included) is more than this clinic's maxParticipants of {} (spec.meetings.maxParticipants)",
                policy.max_participants
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::from([request.host.as_str()]);
    for (i, invitee) in request.invitees.iter().enumerate() {
        let field = format!("participants[{i}].reference");
        check_reference(&field, &invitee.reference, invitee.role.resource_types())?;
        if !seen.insert(invitee.reference.as_str()) {
            return Err(invalid(
                field,
                "names someone already invited to this visit",
            ));
        }
    }
    Ok(())
}

/// A FHIR reference `Type/id` of one of `types`, whose id is a FHIR id (which is also what a
/// join token's pseudonymous user id allows). The value is never echoed: it may be a name.
fn check_reference(field: &str, reference: &str, types: &[&str]) -> Result<(), VisitError> {
    let expected = types
        .iter()
        .map(|t| format!("{t}/<id>"))
        .collect::<Vec<_>>()
        .join(" or ");
    let Some((kind, id)) = reference.split_once('/') else {
        return Err(invalid(
            field,
            format!(
                "is not a FHIR reference ({expected}); bedside takes pseudonymous references from the EHR, never names"
            ),
        ));
    };
    let fhir_id = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if !types.contains(&kind) || !fhir_id {
        return Err(invalid(
            field,
            format!(
                "must be {expected}, where <id> is the EHR's resource id (letters, digits, '-', '.', at most 64); bedside takes pseudonymous references, never names"
            ),
        ));
    }
    if user_id(reference).len() > 64 {
        return Err(invalid(
            field,
            "the resource id is too long (at most 64 characters with its type)",
        ));
    }
    if !crate::join::is_pseudonymous(&user_id(reference)) {
        return Err(invalid(
            field,
            "the resource id has the shape of a person's name (first.last); bedside takes the EHR's opaque resource ids, never names",
        ));
    }
    Ok(())
}

/// The token's user id for a reference: `patient.8c1f2a` (the audit trail's "who").
pub(crate) fn user_id(reference: &str) -> String {
    let (kind, id) = reference.split_once('/').unwrap_or(("", reference));
    format!("{}.{id}", kind.to_ascii_lowercase())
}

fn seconds(t: Timestamp) -> u64 {
    u64::try_from(t.as_second()).unwrap_or(0)
}

fn minutes(d: Duration) -> String {
    format!("{}m", d.as_secs() / 60)
}

#[cfg(test)]
mod tests;
