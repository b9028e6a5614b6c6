//! The audit event model: who did what, where, with what outcome (45 CFR 164.312(b)).
//!
//! PHI-free by construction: there is no field for free text. Identifiers are [`OpaqueId`]s
//! (letters, digits, `.`, `_`, `-`; at most 64), so a display name, an email address or chat
//! text cannot be put into a record, and reasons are a closed set of codes.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A pseudonymous or opaque identifier: user ids, room ids, tenant and node names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(try_from = "String", into = "String")]
pub struct OpaqueId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not an opaque id: use 1-64 letters, digits, '.', '_' or '-' (never a name, an address or free text)"
)]
pub struct NotOpaque(pub String);

impl OpaqueId {
    pub fn new(id: impl Into<String>) -> Result<Self, NotOpaque> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok { Ok(Self(id)) } else { Err(NotOpaque(id)) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OpaqueId {
    type Error = NotOpaque;
    fn try_from(s: String) -> Result<Self, NotOpaque> {
        Self::new(s)
    }
}

impl From<OpaqueId> for String {
    fn from(id: OpaqueId) -> String {
        id.0
    }
}

impl std::fmt::Display for OpaqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the actor proved who they are.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// A join token signed with the tenant's key.
    JoinToken,
    /// A Kubernetes identity (the operator's ServiceAccount, or an API user).
    Kubernetes,
    /// A scheduling system's credential for the visits API (named by its key in the tenant's
    /// `<tenant>-api` Secret).
    ApiCredential,
    /// Nobody authenticated yet (a refused join).
    None,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ActorRole {
    Host,
    Participant,
    Observer,
    Operator,
    /// A scheduling system (EHR) calling the visits API.
    Scheduler,
    /// A clinician acting outside a meeting: asking for, approving or revoking emergency access.
    Clinician,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// The pseudonymous user id from the token, or the operator's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<OpaqueId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ActorRole>,
    pub auth: AuthMethod,
}

/// What happened.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Join,
    Leave,
    Admit,
    Deny,
    WaitingRoomEnter,
    PasscodeFailure,
    TokenRefused,
    MediaRefused,
    Mute,
    StopShare,
    Expel,
    LockMeeting,
    MeetingStart,
    MeetingEnd,
    SettingsChange,
    DriftReverted,
    TenantProvisioned,
    TenantDeprovisioned,
    BaaStateChange,
    SinkFailure,
    SinkRecovered,
    /// The visits API booked a visit (its id is the record's room; never its links).
    VisitBooked,
    /// The visits API cancelled a visit.
    VisitCancelled,
    /// The visits API reissued a visit's links (the older ones are refused).
    VisitReissued,
    /// The visits API told a caller a visit's state.
    VisitRead,
    /// The visits API refused a call: wrong or missing credential, too many calls.
    ApiRefused,
    /// A node took up rotated join keys (`bedside-operator keys rotate`): the record's room is
    /// the new current key's id (`bedside_crds::join::key_id`), never a key.
    JoinKeyRotated,
    /// Sealed periodically while a chain grows: a verifier can tell how long a node was
    /// silent, and a stream cut after a checkpoint still verifies up to it.
    Checkpoint,
    /// Sealed when a node or operator replica stops cleanly: the chain has no record after it.
    ChainClosed,
    /// A participant's media is flowing, encrypted, on the path in `place.mediaPath`.
    MediaConnected,
    /// Emergency access (164.312(a)(2)(ii)), each step of a `BreakGlass` object named in
    /// `place.breakGlass`, the visit as the room: asked for,
    BreakGlassRequested,
    /// approved by a second person,
    BreakGlassApproved,
    /// its link working from now on,
    BreakGlassActivated,
    /// its link used to enter the visit (or refused: the outcome's reason says why),
    BreakGlassJoin,
    /// its time over,
    BreakGlassExpired,
    /// revoked by someone,
    BreakGlassRevoked,
    /// or refused by a rule the schema cannot say (the approver asked for it, it was edited).
    BreakGlassRefused,
}

/// How a participant's media reaches the node: in the join's audit trail, the node's metrics
/// and the signaling protocol's `media-connected`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MediaPath {
    /// UDP: the usual and fastest path.
    Udp,
    /// ICE-TCP: the browser's network blocks UDP to the node.
    Tcp,
    /// Through the tenant's TURN relay: the browser's network lets only TCP 443 (or UDP to the
    /// relay) out.
    Relay,
}

impl MediaPath {
    pub fn label(self) -> &'static str {
        match self {
            MediaPath::Udp => "udp",
            MediaPath::Tcp => "tcp",
            MediaPath::Relay => "relay",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Success,
    Failure,
}

/// What a media node does when an audit sink's buffer is full (the tenant's choice): one
/// definition for the CRD (`spec.audit.whenBufferFull`), the node's config and its delivery.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum BufferFullPolicy {
    // Calls in progress go on; new joins are refused with a reason until the sink catches up.
    // (Plain comments: the CRD documents the values on its field, and per-variant docs would
    // turn the schema's enum into a oneOf.)
    #[default]
    RefuseJoins,
    // Joins go on while the buffer grows to twice its size; past that they are refused.
    KeepServing,
}

/// Why, as a closed code (`token-expired`, `room-full`, ...), never free text.
pub type ReasonCode = OpaqueId;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub result: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonCode>,
    /// This record stands for that many like it (same actor address, action and reason) that
    /// were counted rather than sealed one by one: a flood of refusals cannot fill the buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u32>,
}

impl Outcome {
    pub fn success() -> Self {
        Self {
            result: Verdict::Success,
            reason: None,
            repeated: None,
        }
    }

    pub fn failure(reason: ReasonCode) -> Self {
        Self {
            result: Verdict::Failure,
            reason: Some(reason),
            repeated: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Place {
    /// The media node or operator replica.
    pub node: OpaqueId,
    /// The room, as the opaque id the scheduling system gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<OpaqueId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    /// The path of a participant's media (`media-connected` records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_path: Option<MediaPath>,
    /// The `BreakGlass` object a record of emergency access is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<OpaqueId>,
}

/// One audit event, before it is sealed into the chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEvent {
    pub tenant: OpaqueId,
    pub actor: Actor,
    pub action: Action,
    pub outcome: Outcome,
    pub place: Place,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_free_text_cannot_be_ids() {
        for bad in [
            "Jane Doe",
            "jane@example.org",
            "",
            "a".repeat(65).as_str(),
            "dr. smith's room",
        ] {
            assert!(OpaqueId::new(bad).is_err(), "{bad}");
        }
        assert!(OpaqueId::new("u-7f3a9c").is_ok());
    }

    #[test]
    fn a_record_with_a_display_name_does_not_even_parse() {
        let json = r#"{"tenant":"mercy","actor":{"user":"Jane Doe","auth":"join-token"},
            "action":"join","outcome":{"result":"success"},"place":{"node":"n1"}}"#;
        let err = serde_json::from_str::<AuditEvent>(json).expect_err("not opaque");
        assert!(err.to_string().contains("not an opaque id"), "{err}");
    }
}
