//! `BreakGlass` (`bedside.health/v1alpha1`): emergency access, 45 CFR 164.312(a)(2)(ii).
//!
//! A clinician who must reach a patient's visit now (its host is gone, the passcode is not at
//! hand) asks for it with a reason and an incident reference; optionally a second person
//! approves. While the object is active, the named clinician's emergency host link enters that
//! visit without the waiting room, the lock and the passcode: those stay in force for everyone
//! else. It lasts at most an hour, ends by itself, can be revoked, and the object is kept for
//! review. The schema's own bounds (enforced by every API server, also a v1.20 one) refuse a
//! longer time to live and a missing reason.
//!
//! The media pods learn which grants are active from a *break-glass lease* the operator keeps
//! beside the visit leases they already watch ([`BreakGlassLease`]); the link's token names the
//! object, and a pod lets it in only while that lease says so.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::leases::{KIND_LABEL, ROOM_KEY_LABEL, TENANT_LABEL, room_key};

/// The longest a grant may last once active.
pub const MAX_TTL_MINUTES: u32 = 60;
/// How long a request may wait for its approval before it expires unused.
pub const APPROVAL_WAIT_MINUTES: i64 = 60;
/// `Practitioner/<id>` or `PractitionerRole/<id>`: who may ask, approve, revoke or be let in.
pub const CLINICIAN_REFERENCE_PATTERN: &str =
    r"^(Practitioner|PractitionerRole)/[A-Za-z0-9.-]{1,64}$";
/// An incident's id in the clinic's register: no spaces, no free text.
pub const INCIDENT_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$";
/// A visit id (`crate::visit::is_visit_id`).
pub const VISIT_PATTERN: &str = r"^[A-Za-z0-9._-]{1,128}$";

/// Emergency access to one visit for one clinician, for at most an hour.
// Each printed column repeats its `type_`: not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bedside.health",
    version = "v1alpha1",
    kind = "BreakGlass",
    plural = "breakglasses",
    shortname = "bg",
    category = "bedside",
    namespaced,
    status = "BreakGlassStatus",
    doc = "Emergency access (45 CFR 164.312(a)(2)(ii)): one clinician's host link into one visit, past its waiting room and passcode, for at most an hour; audited and kept for review.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Requested, Active, Expired, Revoked or Refused"
    ),
    printcolumn(
        name = "Clinician",
        type_ = "string",
        json_path = ".spec.clinician",
        description = "Who the emergency link lets in"
    ),
    printcolumn(
        name = "Incident",
        type_ = "string",
        json_path = ".spec.incident",
        description = "The incident's reference"
    ),
    printcolumn(
        name = "Expires",
        type_ = "date",
        json_path = ".status.expiresAt",
        description = "When the emergency link stops working"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlassSpec {
    /// The HealthcareTenant (in this namespace) whose visit this is.
    #[schemars(length(min = 1, max = 63))]
    pub tenant: String,

    /// The visit's id, as its booking printed it (`visit-…`).
    #[schemars(regex(pattern = VISIT_PATTERN))]
    pub visit: String,

    /// The clinician the emergency link lets in, as a FHIR reference (Practitioner/<id> or
    /// PractitionerRole/<id>): pseudonymous, as in a visit's booking.
    #[schemars(regex(pattern = CLINICIAN_REFERENCE_PATTERN))]
    pub clinician: String,

    /// Who asks for it (a FHIR reference, as clinician).
    #[schemars(regex(pattern = CLINICIAN_REFERENCE_PATTERN))]
    pub requested_by: String,

    /// Why emergency access is needed, for the people who review it (20 to 2000 characters).
    /// Kept in this object only: never in an audit record, a log or a metric, so it may say
    /// what the reviewers need.
    #[schemars(length(min = 20, max = 2000))]
    pub reason: String,

    /// The incident's reference in the clinic's incident register (no spaces).
    #[schemars(regex(pattern = INCIDENT_PATTERN))]
    pub incident: String,

    /// Minutes the link works once active: 1 to 60.
    #[schemars(range(min = 1, max = 60))]
    pub ttl_minutes: u32,

    /// A second person must approve (set approvedBy) before the link works; unapproved, the
    /// request expires after an hour.
    #[serde(default)]
    pub approval_required: bool,

    /// Who approved (a FHIR reference; not the requester).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CLINICIAN_REFERENCE_PATTERN))]
    pub approved_by: Option<String>,

    /// Set to revoke: the link stops working and the clinician leaves the visit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CLINICIAN_REFERENCE_PATTERN))]
    pub revoked_by: Option<String>,
}

/// Where a grant is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Waiting for its approval (or for its tenant).
    Requested,
    /// The link works.
    Active,
    /// Its time ran out (or it was never approved in time).
    Expired,
    Revoked,
    /// It broke a rule the schema cannot say (the approver is the requester, a changed grant).
    Refused,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Requested => "Requested",
            Phase::Active => "Active",
            Phase::Expired => "Expired",
            Phase::Revoked => "Revoked",
            Phase::Refused => "Refused",
        }
    }

    /// Over for good: the object stays for review, nothing changes it any more.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Expired | Phase::Revoked | Phase::Refused)
    }
}

/// What was granted when the grant became active: a later edit of these is refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Granted {
    pub visit: String,
    pub clinician: String,
    pub ttl_minutes: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlassStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Requested, Approved, Active, Expired and Revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the link started working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub activated_at: Option<Timestamp>,
    /// When it stops (activatedAt + ttlMinutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub expires_at: Option<Timestamp>,
    /// When it ended (expired, revoked or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<Granted>,
    /// The Secret holding the emergency link while it works (readable with RBAC on Secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_secret: Option<String>,
    /// The steps sealed into the tenant's audit trail (requested, approved, activated,
    /// expired, revoked, refused), each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recorded: Vec<String>,
    /// What happens now, or why it ended, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The kind of lease that tells media pods an emergency link is active.
pub const BREAK_GLASS_KIND: &str = "break-glass";
/// On a break-glass lease: the BreakGlass object's name (the token's `breakGlass` claim).
pub const NAME_ANNOTATION: &str = "bedside.health/break-glass";
/// On a break-glass lease: the hash of the clinician's user id (`meeting::user_key` shape), so
/// the lease does not list who.
pub const USER_ANNOTATION: &str = "bedside.health/break-glass-user";
/// On a break-glass lease: when the grant ends (RFC 3339).
pub const UNTIL_ANNOTATION: &str = "bedside.health/break-glass-until";

/// The user id a FHIR reference stands for in tokens and audit records.
pub fn user_id(reference: &str) -> String {
    crate::visit::user_id(reference)
}

/// The hash of a user id, as break-glass leases hold it.
pub fn user_hash(user: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The name of the lease for BreakGlass `name` of `tenant`.
pub fn lease_name(tenant: &str, name: &str) -> String {
    format!("{tenant}-break-glass-{}", room_key(name))
}

/// What a break-glass lease says: this grant is active until then, for this user and room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakGlassLease {
    pub name: String,
    pub user_hash: String,
    pub room_key: String,
    pub until: Timestamp,
}

impl BreakGlassLease {
    /// The lease for an active grant (`tenant`'s BreakGlass `name`).
    pub fn new(name: &str, user: &str, visit: &str, until: Timestamp) -> Self {
        Self {
            name: name.to_string(),
            user_hash: user_hash(user),
            room_key: room_key(visit),
            until,
        }
    }

    pub fn to_lease(&self, tenant: &str) -> Lease {
        let labels = BTreeMap::from([
            (TENANT_LABEL.to_string(), tenant.to_string()),
            (KIND_LABEL.to_string(), BREAK_GLASS_KIND.to_string()),
            (ROOM_KEY_LABEL.to_string(), self.room_key.clone()),
        ]);
        let annotations = BTreeMap::from([
            (NAME_ANNOTATION.to_string(), self.name.clone()),
            (USER_ANNOTATION.to_string(), self.user_hash.clone()),
            (UNTIL_ANNOTATION.to_string(), self.until.to_string()),
        ]);
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(tenant, &self.name)),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(LeaseSpec::default()),
        }
    }

    /// Reads a break-glass lease; `None` for any other lease or one missing a part.
    pub fn of(lease: &Lease) -> Option<Self> {
        let labels = lease.metadata.labels.as_ref()?;
        if labels.get(KIND_LABEL).map(String::as_str) != Some(BREAK_GLASS_KIND) {
            return None;
        }
        let annotations = lease.metadata.annotations.as_ref()?;
        Some(Self {
            name: annotations.get(NAME_ANNOTATION)?.clone(),
            user_hash: annotations.get(USER_ANNOTATION)?.clone(),
            room_key: labels.get(ROOM_KEY_LABEL)?.clone(),
            until: annotations.get(UNTIL_ANNOTATION)?.parse().ok()?,
        })
    }

    /// Whether this lease lets `user` into `room` through grant `name` at `now`.
    pub fn lets_in(&self, name: &str, user: &str, room: &str, now: Timestamp) -> bool {
        self.name == name
            && self.user_hash == user_hash(user)
            && self.room_key == room_key(room)
            && now < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn a_lease_lets_in_its_clinician_into_its_visit_until_it_ends_and_no_one_else() {
        let now = Timestamp::now();
        let until = now + jiff::SignedDuration::from_mins(30);
        let grant = BreakGlassLease::new("bg-1", "practitioner.dr-9", "visit-a", until);
        let read = BreakGlassLease::of(&grant.to_lease("mercy")).expect("a break-glass lease");
        assert_eq!(read, grant);
        assert!(read.lets_in("bg-1", "practitioner.dr-9", "visit-a", now));
        assert!(!read.lets_in("bg-2", "practitioner.dr-9", "visit-a", now));
        assert!(!read.lets_in("bg-1", "practitioner.dr-7", "visit-a", now));
        assert!(!read.lets_in("bg-1", "practitioner.dr-9", "visit-b", now));
        assert!(!read.lets_in("bg-1", "practitioner.dr-9", "visit-a", until));
        // The lease does not say who: only a hash of the user id.
        let text = serde_json::to_string(&grant.to_lease("mercy")).expect("json");
        assert!(!text.contains("dr-9"), "{text}");
    }

    #[test]
    fn the_schema_bounds_the_ttl_and_requires_a_reason() {
        let crd = serde_json::to_value(BreakGlass::crd()).expect("crd");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let ttl = &spec["properties"]["ttlMinutes"];
        assert_eq!(ttl["maximum"].as_f64(), Some(60.0), "{ttl}");
        assert_eq!(ttl["minimum"].as_f64(), Some(1.0), "{ttl}");
        assert_eq!(spec["properties"]["reason"]["minLength"], 20, "{spec}");
        let required: Vec<&str> = spec["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for field in [
            "reason",
            "incident",
            "ttlMinutes",
            "clinician",
            "requestedBy",
            "visit",
        ] {
            assert!(required.contains(&field), "{field} required: {required:?}");
        }
    }
}
