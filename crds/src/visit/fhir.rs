//! A booked visit as the EHR stores it on its Appointment: FHIR R5 `Appointment.virtualService`
//! (a `VirtualServiceDetail`), and for R4 servers the same detail in HL7's cross-version
//! extension. Which field gets what is in docs/visits.md.
//!
//! The Appointment carries the patient's link (what a patient portal shows) and the passcode
//! as `sessionKey`; the host's and the others' links are personal and travel on their own
//! (the JSON output), never on a resource every participant can read.

use super::{IssuedLink, IssuedVisit};
use serde_json::{Value, json};

/// The system of the visit id in `Appointment.identifier`.
pub const VISIT_ID_SYSTEM: &str = "https://bedside.health/fhir/visit-id";
/// The system of `VirtualServiceDetail.channelType`.
pub const CHANNEL_TYPE_SYSTEM: &str = "https://bedside.health/fhir/virtual-service-type";
/// HL7's R5-in-R4 extension for `Appointment.virtualService`.
pub const R4_VIRTUAL_SERVICE_EXTENSION: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService";

/// `{"r5": Appointment, "r4": Appointment}` for `visit`.
pub fn appointments(visit: &IssuedVisit) -> Value {
    json!({ "r5": r5(visit), "r4": r4(visit) })
}

/// The link the Appointment carries: the (first) patient's, else the first invitee's.
fn shared_link(visit: &IssuedVisit) -> Option<&IssuedLink> {
    visit
        .invitees
        .iter()
        .find(|i| i.role == "patient")
        .or(visit.invitees.first())
}

fn channel_type() -> Value {
    json!({ "system": CHANNEL_TYPE_SYSTEM, "code": "bedside", "display": "bedside video visit" })
}

/// What R4 and R5 Appointments share: identifier, status, times, participants.
fn base(visit: &IssuedVisit) -> Value {
    let participants: Vec<Value> = std::iter::once(&visit.host)
        .chain(&visit.invitees)
        .map(|p| json!({ "actor": { "reference": p.reference }, "status": "accepted" }))
        .collect();
    json!({
        "resourceType": "Appointment",
        "identifier": [{ "system": VISIT_ID_SYSTEM, "value": visit.id }],
        "status": "booked",
        "start": instant(visit.start),
        "end": instant(visit.end),
        "minutesDuration": visit.minutes(),
        "participant": participants,
    })
}

fn r5(visit: &IssuedVisit) -> Value {
    let mut appointment = base(visit);
    let mut detail = json!({
        "channelType": channel_type(),
        "sessionKey": visit.passcode,
        "maxParticipants": visit.max_participants,
    });
    if let Some(link) = shared_link(visit) {
        detail["addressUrl"] = json!(link.link);
    }
    appointment["virtualService"] = json!([detail]);
    appointment
}

fn r4(visit: &IssuedVisit) -> Value {
    let mut appointment = base(visit);
    let mut parts = vec![
        json!({ "url": "channelType", "valueCoding": channel_type() }),
        json!({ "url": "sessionKey", "valueString": visit.passcode }),
        json!({ "url": "maxParticipants", "valuePositiveInt": visit.max_participants }),
    ];
    if let Some(link) = shared_link(visit) {
        parts.insert(1, json!({ "url": "addressUrl", "valueUrl": link.link }));
    }
    appointment["extension"] = json!([{ "url": R4_VIRTUAL_SERVICE_EXTENSION, "extension": parts }]);
    appointment
}

fn instant(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
