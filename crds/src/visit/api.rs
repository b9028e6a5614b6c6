//! The visits API's wire contract (`/api/v1/visits` on the tenant's endpoint), pure: the bodies
//! a scheduling system sends, what it gets back, and the errors, named once for the node that
//! serves it, the OpenAPI document (`media-node/api/visits-v1.openapi.json`) and the tests.
//!
//! Bodies are read strictly: an unknown field is refused (an EHR must not send a patient's
//! name in a field bedside would ignore), and an error names the field, never its value.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_GRACE, DEFAULT_OPENS_BEFORE, Invitee, VisitError, VisitRequest};

/// `POST /api/v1/visits`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BookingBody {
    /// RFC 3339; now when absent.
    #[serde(default)]
    pub start: Option<Timestamp>,
    pub duration_minutes: u32,
    /// `Practitioner/<id>` or `PractitionerRole/<id>`.
    pub host: String,
    pub participants: Vec<Invitee>,
    /// How long before the start the links open (default 15, at most 60).
    #[serde(default)]
    pub opens_before_minutes: Option<u32>,
    /// How long after the end the links keep working (default 15, at most 60).
    #[serde(default)]
    pub grace_minutes: Option<u32>,
}

/// What a booking asks for, and the window's margins it chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booking {
    pub request: VisitRequest,
    pub opens_before: Duration,
    pub grace: Duration,
}

impl BookingBody {
    pub fn booking(self, now: Timestamp) -> Booking {
        let minutes = |m: u32| Duration::from_secs(u64::from(m) * 60);
        Booking {
            request: VisitRequest {
                start: self.start.unwrap_or(now),
                duration: minutes(self.duration_minutes),
                host: self.host,
                invitees: self.participants,
            },
            opens_before: self
                .opens_before_minutes
                .map_or(DEFAULT_OPENS_BEFORE, minutes),
            grace: self.grace_minutes.map_or(DEFAULT_GRACE, minutes),
        }
    }
}

/// `POST /api/v1/visits/{id}/cancel`: until when its links could work (the `window.closes`
/// the booking returned); after that the cancellation is dropped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelBody {
    pub until: Timestamp,
}

/// A cancellation's outcome; also `GET /api/v1/visits/{id}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VisitStatus {
    pub id: String,
    pub cancelled: bool,
    /// A pod holds the visit's room: its call is going on (or ended within the last minute).
    pub in_progress: bool,
}

/// Every error: a code to branch on, words for the integrator, the field when one is wrong.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: Problem,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>, field: Option<String>) -> Self {
        Self {
            error: Problem {
                code: code.into(),
                message: message.into(),
                field,
            },
        }
    }
}

impl From<&VisitError> for ErrorBody {
    fn from(e: &VisitError) -> Self {
        match e {
            VisitError::Invalid { field, problem } => {
                Self::new("invalid", problem.clone(), Some(body_field(field)))
            }
            VisitError::Key(_) => {
                Self::new("internal", "the visit's links could not be signed", None)
            }
        }
    }
}

/// A booking's field as the API body names it (the checks name the CLI's).
fn body_field(field: &str) -> String {
    match field {
        "duration" => "durationMinutes".into(),
        "opensBefore" => "opensBeforeMinutes".into(),
        "grace" => "graceMinutes".into(),
        other => other.into(),
    }
}

/// Reads a JSON body of type `T`; a bad one is an error naming where it went wrong (the
/// field's path, or the line and column), never the value sent.
pub fn read<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ErrorBody> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = match inner.classify() {
            serde_json::error::Category::Data => {
                // serde's own words may quote the value (a name in the wrong field): only
                // its kind of problem is kept.
                let said = inner.to_string();
                let (field, kind) = if said.starts_with("unknown field") {
                    (path, "is not a field of this request")
                } else if let Some(rest) = said.strip_prefix("missing field `") {
                    // serde names the missing field itself (the path is its parent's).
                    let name = rest.split('`').next().unwrap_or_default();
                    let field = match path.as_str() {
                        "." => name.to_string(),
                        parent => format!("{parent}.{name}"),
                    };
                    (field, "is required")
                } else {
                    (path, "has the wrong type or value")
                };
                return ErrorBody::new(
                    "invalid",
                    format!("{field} {kind} (see /api/v1/openapi.json)"),
                    Some(field),
                );
            }
            _ => format!(
                "the body is not JSON (line {}, column {})",
                inner.line(),
                inner.column()
            ),
        };
        ErrorBody::new("malformed", message, None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visit::InviteeRole;

    #[test]
    fn a_booking_reads_with_defaults_for_what_it_leaves_out() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().expect("time");
        let body: BookingBody = read(
            br#"{"durationMinutes": 30, "host": "Practitioner/dr-7",
                 "participants": [{"reference": "Patient/8c1f2a", "role": "patient"}]}"#,
        )
        .expect("a booking");
        let booking = body.booking(now);
        assert_eq!(booking.request.start, now);
        assert_eq!(booking.request.duration, Duration::from_secs(1800));
        assert_eq!(booking.request.invitees[0].role, InviteeRole::Patient);
        assert_eq!(booking.opens_before, DEFAULT_OPENS_BEFORE);
        assert_eq!(booking.grace, DEFAULT_GRACE);
    }

    #[test]
    fn a_bad_body_names_the_field_and_never_the_value() {
        let cases: [(&[u8], &str, &str); 4] = [
            (
                br#"{"durationMinutes": 30, "host": "Practitioner/1", "participants": [], "patientName": "Jane Doe"}"#,
                "patientName",
                "is not a field",
            ),
            (
                br#"{"durationMinutes": "Jane Doe", "host": "Practitioner/1", "participants": []}"#,
                "durationMinutes",
                "wrong type",
            ),
            (
                br#"{"durationMinutes": 30, "host": "Practitioner/1", "participants": [{"reference": "Patient/1", "role": "Jane Doe"}]}"#,
                "participants[0].role",
                "wrong type or value",
            ),
            (
                br#"{"durationMinutes": 30, "participants": []}"#,
                "\"field\":\"host\"",
                "is required",
            ),
        ];
        for (body, field, says) in cases {
            let e = read::<BookingBody>(body).expect_err("refused");
            let text = serde_json::to_string(&e).expect("json");
            assert!(
                e.error.message.contains(says) && text.contains(field),
                "{text}"
            );
            assert!(!text.contains("Jane"), "the value is never echoed: {text}");
        }
        let e = read::<BookingBody>(b"{not json").expect_err("refused");
        assert_eq!(e.error.code, "malformed");
    }
}
