//! The signaling protocol, version 1 (docs/signaling.md): JSON text frames over a WebSocket.
//!
//! Parsing is pure and total: any input yields a message or a [`ProtocolError`] whose code and
//! text go back to the client. Nothing here can panic on what a client sends.

use serde::{Deserialize, Serialize};

use bedside_crds::join::Role;

/// The protocol version this node speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest message accepted; an SDP offer with simulcast is about 10 KiB. The WebSocket
/// layer reads no frame beyond it: the connection closes with `too-large`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Room names: what a scheduling system puts in a link, never a patient's name.
pub const MAX_ROOM_NAME: usize = 64;

/// What a client sends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Must come first.
    #[serde(rename_all = "camelCase")]
    Join {
        v: u32,
        room: String,
        token: String,
        /// The name the participant typed, shown to the others in the room. It lives only in
        /// the node's memory for the length of the visit: never in a log, a metric or an
        /// audit record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
        /// The meeting's passcode, which the patient got apart from the link.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passcode: Option<String>,
    },
    /// Before a call, instead of a join: a connectivity check's offer (a data channel only),
    /// for a throwaway connection that joins no room (docs/signaling.md#connectivity-check).
    Probe {
        v: u32,
        room: String,
        token: String,
        sdp: String,
    },
    /// How large the client shows one participant's video: the node sends no larger picture
    /// than that needs (docs/signaling.md#client-messages).
    #[serde(rename_all = "camelCase")]
    View {
        v: u32,
        participant_id: String,
        quality: ViewQuality,
    },
    /// The client's offer: the first one publishes its camera and microphone.
    Offer {
        v: u32,
        sdp: String,
    },
    /// The client's answer to an offer from the node.
    Answer {
        v: u32,
        sdp: String,
    },
    /// Trickle ICE: one candidate line (`candidate:...`), or an empty string at the end.
    Candidate {
        v: u32,
        candidate: String,
    },
    Leave {
        v: u32,
    },
    /// Host: let a waiting participant in.
    #[serde(rename_all = "camelCase")]
    Admit {
        v: u32,
        participant_id: String,
    },
    /// Host: turn a waiting participant away.
    #[serde(rename_all = "camelCase")]
    Deny {
        v: u32,
        participant_id: String,
    },
    /// Host: no new joins, not even to the waiting room (or open again).
    Lock {
        v: u32,
        locked: bool,
    },
    /// Host: remove a participant, who cannot rejoin this meeting.
    #[serde(rename_all = "camelCase")]
    Expel {
        v: u32,
        participant_id: String,
    },
    /// Host: stop forwarding one participant's audio, or everyone's but the host's.
    #[serde(rename_all = "camelCase")]
    Mute {
        v: u32,
        #[serde(default)]
        participant_id: Option<String>,
    },
    /// Host: end the meeting for everyone.
    End {
        v: u32,
    },
    /// Unmute yourself after a host muted you (only you can).
    Unmute {
        v: u32,
    },
    /// The client's next offer adds its screen share on this m-line (1-16 characters).
    Share {
        v: u32,
        mid: String,
    },
    /// Host: stop forwarding a participant's screen share.
    #[serde(rename_all = "camelCase")]
    StopShare {
        v: u32,
        participant_id: String,
    },
    /// How the browser receives and sends video, every few seconds: numbers only, for the
    /// node's quality metrics (docs/signaling.md#quality-reports).
    Quality(QualityReport),
}

/// What a browser reports of its picture ([`ClientMessage::Quality`]): no identifier, no
/// content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QualityReport {
    pub v: u32,
    /// One entry per remote video the browser decodes now.
    #[serde(default)]
    pub video: Vec<ReceivedVideo>,
    /// Freezes of those videos since the last report (the browser's `freezeCount`: no frame
    /// for much longer than the usual gap, at least 150 ms beyond it).
    #[serde(default)]
    pub freezes: u32,
    /// What the browser estimates it can send (`availableOutgoingBitrate`), bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_estimate_bps: Option<u64>,
}

/// One decoded remote video, as the browser shows it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedVideo {
    /// Decoded frame height, pixels.
    pub height: u32,
    /// Decoded frames per second.
    pub fps: u32,
}

/// Bounds of a quality report: what any real browser stays within.
pub const MAX_REPORTED_VIDEOS: usize = 16;
const MAX_REPORTED_HEIGHT: u32 = 4320;
const MAX_REPORTED_FPS: u32 = 240;
const MAX_REPORTED_FREEZES: u32 = 1000;
const MAX_REPORTED_BPS: u64 = 1_000_000_000;

impl QualityReport {
    /// The report, or why it cannot be true.
    pub fn checked(self) -> Result<Self, ProtocolError> {
        let bad = |what: String| Err(ProtocolError::new(ErrorCode::InvalidMessage, what));
        if self.video.len() > MAX_REPORTED_VIDEOS {
            return bad(format!(
                "a quality report names at most {MAX_REPORTED_VIDEOS} videos"
            ));
        }
        if let Some(v) = self
            .video
            .iter()
            .find(|v| v.height > MAX_REPORTED_HEIGHT || v.fps > MAX_REPORTED_FPS)
        {
            return bad(format!(
                "a video of {} px at {} fps is beyond any camera (at most {MAX_REPORTED_HEIGHT} px, {MAX_REPORTED_FPS} fps)",
                v.height, v.fps
            ));
        }
        if self.freezes > MAX_REPORTED_FREEZES {
            return bad(format!("at most {MAX_REPORTED_FREEZES} freezes per report"));
        }
        if self.send_estimate_bps.is_some_and(|b| b > MAX_REPORTED_BPS) {
            return bad(format!("sendEstimateBps is at most {MAX_REPORTED_BPS}"));
        }
        Ok(self)
    }
}

/// How a participant's media reaches the node: one definition with the audit record's.
pub use bedside_audit::event::MediaPath;

/// The picture a tile needs: `low` up to about 240 pixels high, `medium` up to about 480,
/// `high` beyond.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ViewQuality {
    Low,
    Medium,
    High,
}

impl ViewQuality {
    /// How many simulcast layers above the lowest the tile may get (`None`: any).
    pub fn layer_cap(self) -> Option<usize> {
        match self {
            ViewQuality::Low => Some(0),
            ViewQuality::Medium => Some(1),
            ViewQuality::High => None,
        }
    }
}

/// A TURN server as WebRTC's `RTCIceServer` dictionary spells it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    /// Derived from the secret the node shares with the relay; valid until the username's
    /// expiry.
    pub credential: String,
}

/// What the node sends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    Joined {
        v: u32,
        participant_id: String,
        room: String,
        role: Role,
        /// Everyone already in the room.
        participants: Vec<ParticipantInfo>,
        /// The tenant requires end-to-end media encryption: the client encrypts every frame
        /// with a key the node never sees (docs/signaling.md#end-to-end-encryption).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        end_to_end: bool,
        /// The tenant's TURN relay with a credential for this join, for networks that let
        /// nothing but TCP 443 out; empty when the tenant runs none. The client passes these
        /// to `RTCPeerConnection` as they are.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    Answer {
        v: u32,
        sdp: String,
    },
    /// The answer to a connectivity check, with the relay (a credential good for a minute)
    /// when the tenant runs one.
    #[serde(rename_all = "camelCase")]
    ProbeAnswer {
        v: u32,
        sdp: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// The node adds or removes forwarded tracks; the client answers.
    Offer {
        v: u32,
        sdp: String,
    },
    ParticipantJoined {
        v: u32,
        participant: ParticipantInfo,
    },
    #[serde(rename_all = "camelCase")]
    ParticipantLeft {
        v: u32,
        participant_id: String,
        reason: LeaveReason,
    },
    /// A forwarded track is in the node's latest offer; `mid` ties it to the transceiver.
    #[serde(rename_all = "camelCase")]
    TrackAdded {
        v: u32,
        participant_id: String,
        kind: TrackKind,
        mid: String,
    },
    /// The media path is up: DTLS finished with the listed ciphers, over `path`.
    #[serde(rename_all = "camelCase")]
    MediaConnected {
        v: u32,
        srtp_profile: String,
        /// Absent from nodes before ICE-TCP.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<MediaPath>,
    },
    Error {
        v: u32,
        code: ErrorCode,
        message: String,
        /// The node closes the connection after a fatal error.
        fatal: bool,
    },
    /// The node is shutting down or the meeting ended; the connection closes next.
    Closing {
        v: u32,
        reason: String,
    },
    /// You are in the waiting room until a host admits you; `joined` follows then.
    #[serde(rename_all = "camelCase")]
    Waiting {
        v: u32,
        participant_id: String,
    },
    /// To hosts: who waits, in arrival order.
    WaitingRoom {
        v: u32,
        waiting: Vec<ParticipantInfo>,
    },
    /// The meeting was locked or opened.
    Locked {
        v: u32,
        locked: bool,
    },
    /// A host muted you: the node no longer forwards your audio.
    Muted {
        v: u32,
    },
    /// A host stopped your screen share: the node no longer forwards it.
    ShareStopped {
        v: u32,
    },
    /// The meeting ends in this many seconds (its maximum duration).
    #[serde(rename_all = "camelCase")]
    MeetingEnding {
        v: u32,
        in_seconds: u64,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    pub id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
}

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 64;

/// A name a participant typed. Its `Debug` is redacted, so it cannot reach a log line by way
/// of `{:?}` on a message.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DisplayName(..)")
    }
}

/// A display name as typed: trimmed, 1 to [`MAX_DISPLAY_NAME`] characters, no control
/// characters. Empty means none.
pub fn display_name(typed: Option<&str>) -> Result<Option<DisplayName>, ProtocolError> {
    let Some(name) = typed.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_DISPLAY_NAME {
        return Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!("displayName is longer than {MAX_DISPLAY_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            "displayName may not contain control characters",
        ));
    }
    Ok(Some(DisplayName(name.to_string())))
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    Audio,
    Video,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LeaveReason {
    Left,
    Disconnected,
    MediaRefused,
    /// The meeting removed them: denied, expelled, idle, token expired, meeting ended.
    Removed,
}

/// Machine-readable error codes; the `message` beside them is for people.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    MalformedJson,
    UnsupportedVersion,
    UnknownType,
    InvalidMessage,
    TooLarge,
    BinaryFrame,
    JoinFirst,
    AlreadyJoined,
    TokenRefused,
    RoomFull,
    InvalidSdp,
    NoPendingOffer,
    MediaEncryptionRefused,
    NotAvailable,
    Internal,
    /// A host action from someone who is not a host.
    NotHost,
    /// Media before a host admitted you.
    Waiting,
    MeetingLocked,
    Expelled,
    Denied,
    MeetingEnded,
    IdleTimeout,
    TokenExpired,
    /// A visit's link used before its window opens; the page says when to come back.
    VisitNotOpenYet,
    /// The clinic cancelled the visit: its links are refused, its call ended.
    VisitCancelled,
    /// The same link joined again elsewhere; this connection left the visit.
    LinkOpenedElsewhere,
    /// The visit's links were reissued; this one is older.
    LinkReplaced,
    NoSuchParticipant,
    /// The passcode is missing or wrong.
    PasscodeRefused,
    /// Too many wrong passcodes from this client; try again later.
    PasscodeCoolDown,
    /// A chat message too long, too fast, or not text.
    ChatRefused,
    /// Too many join attempts from this network; the message says when to try again.
    TooManyAttempts,
    /// More ICE candidates than one connection needs; the rest are ignored.
    TooManyCandidates,
    /// More messages than a client sends; the connection is closed.
    TooManyMessages,
    /// An emergency link whose grant is not active: expired, revoked or not yet approved (at
    /// join, or to its clinician in the call when it ends).
    BreakGlassInactive,
}

impl ErrorCode {
    /// The kebab-case code, as clients and audit records see it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed-json",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::InvalidMessage => "invalid-message",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::BinaryFrame => "binary-frame",
            ErrorCode::JoinFirst => "join-first",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::TokenRefused => "token-refused",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::InvalidSdp => "invalid-sdp",
            ErrorCode::NoPendingOffer => "no-pending-offer",
            ErrorCode::MediaEncryptionRefused => "media-encryption-refused",
            ErrorCode::NotAvailable => "not-available",
            ErrorCode::Internal => "internal",
            ErrorCode::NotHost => "not-host",
            ErrorCode::Waiting => "waiting",
            ErrorCode::MeetingLocked => "meeting-locked",
            ErrorCode::Expelled => "expelled",
            ErrorCode::Denied => "denied",
            ErrorCode::MeetingEnded => "meeting-ended",
            ErrorCode::IdleTimeout => "idle-timeout",
            ErrorCode::TokenExpired => "token-expired",
            ErrorCode::VisitNotOpenYet => "visit-not-open-yet",
            ErrorCode::VisitCancelled => "visit-cancelled",
            ErrorCode::LinkOpenedElsewhere => "link-opened-elsewhere",
            ErrorCode::LinkReplaced => "link-replaced",
            ErrorCode::NoSuchParticipant => "no-such-participant",
            ErrorCode::PasscodeRefused => "passcode-refused",
            ErrorCode::PasscodeCoolDown => "passcode-cool-down",
            ErrorCode::ChatRefused => "chat-refused",
            ErrorCode::TooManyAttempts => "too-many-attempts",
            ErrorCode::TooManyCandidates => "too-many-candidates",
            ErrorCode::TooManyMessages => "too-many-messages",
            ErrorCode::BreakGlassInactive => "break-glass-inactive",
        }
    }
}

/// A message the node could not take, with what to tell the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    /// A link of a cancelled visit, at join or when the call it is in ends.
    pub fn visit_cancelled() -> Self {
        Self::new(
            ErrorCode::VisitCancelled,
            "the clinic cancelled this visit; contact them if you need a new appointment",
        )
    }

    /// An emergency link whose grant does not let its bearer in (now).
    pub fn break_glass_inactive() -> Self {
        Self::new(
            ErrorCode::BreakGlassInactive,
            "this emergency access link does not work now: its grant expired, was revoked or is \
             not approved yet (ask for emergency access again if you still need it)",
        )
    }

    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn to_message(&self, fatal: bool) -> ServerMessage {
        ServerMessage::Error {
            v: PROTOCOL_VERSION,
            code: self.code,
            message: self.message.clone(),
            fatal,
        }
    }
}

const KNOWN_TYPES: &[&str] = &[
    "join",
    "probe",
    "view",
    "offer",
    "answer",
    "candidate",
    "leave",
    "admit",
    "deny",
    "lock",
    "expel",
    "mute",
    "end",
    "share",
    "stop-share",
    "quality",
    "unmute",
];

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientMessage, ProtocolError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
                text.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(
            ErrorCode::MalformedJson,
            format!("not a JSON message ({})", without_input(&e)),
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            "a message is a JSON object with \"v\" and \"type\"",
        ));
    };
    match object.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(ProtocolError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {v} is not supported; this node speaks version {PROTOCOL_VERSION}"
                ),
            ));
        }
        None => {
            return Err(ProtocolError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "the message has no numeric \"v\"; this node speaks version {PROTOCOL_VERSION}"
                ),
            ));
        }
    }
    let kind = object
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            ProtocolError::new(ErrorCode::InvalidMessage, "the message has no \"type\"")
        })?
        .to_string();
    let kind = kind.as_str();
    if !KNOWN_TYPES.contains(&kind) {
        return Err(ProtocolError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type; known types: {}",
                KNOWN_TYPES.join(", ")
            ),
        ));
    }
    let message: ClientMessage = serde_json::from_value(value).map_err(|e| {
        ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!("invalid {kind:?} message: {}", without_input(&e)),
        )
    })?;
    if let ClientMessage::Join { room, .. } = &message {
        check_room_name(room)?;
    }
    if let ClientMessage::Share { mid, .. } = &message
        && (mid.is_empty() || mid.len() > 16)
    {
        return Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            "share needs the mid (1-16 characters) of the screen's m-line",
        ));
    }
    Ok(message)
}

fn check_room_name(room: &str) -> Result<(), ProtocolError> {
    let ok = !room.is_empty()
        && room.len() <= MAX_ROOM_NAME
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!(
                "room names are 1-{MAX_ROOM_NAME} letters, digits, '-', '_' or '.' (an opaque id, never a name)"
            ),
        ))
    }
}

/// What serde found wrong, without the client's input: its messages quote the offending
/// value or field name (`invalid type: string "..."`), and nothing a client sent is echoed.
/// What serde expected is ours (field names, types) and stays, with the position.
fn without_input(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = match e.classify() {
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Eof => "the message ends early",
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Data => [
            "missing field",
            "invalid type",
            "invalid value",
            "invalid length",
            "unknown field",
            "unknown variant",
            "duplicate field",
        ]
        .into_iter()
        .find(|known| text.starts_with(known))
        .unwrap_or("invalid content"),
    };
    // `missing field` and `duplicate field` name one of our fields: say which.
    let named = (what == "missing field" || what == "duplicate field")
        .then(|| text.split('`').nth(1))
        .flatten()
        .filter(|field| field.len() <= 32 && field.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|field| format!(" `{field}`"))
        .unwrap_or_default();
    // serde appends what it expected after the client's value: the last ", expected ".
    let expected = text
        .rfind(", expected ")
        .map(|at| &text[at..])
        .and_then(|rest| rest.split(" at line ").next())
        .filter(|rest| !rest.contains('"'))
        .unwrap_or("");
    let position = if e.line() > 0 {
        format!(" at line {} column {}", e.line(), e.column())
    } else {
        String::new()
    };
    format!("{what}{named}{expected}{position}")
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no floats.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"v":1,"type":"error","code":"internal","message":"encoding failed","fatal":true}"#
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quality_report_is_read_and_checked_against_what_browsers_can_do() {
        let text = r#"{"v":1,"type":"quality","video":[{"height":720,"fps":30}],"freezes":1,"sendEstimateBps":2500000}"#;
        let Ok(ClientMessage::Quality(report)) = parse(text) else {
            panic!("a quality report");
        };
        assert!(
            parse(r#"{"v":1,"type":"quality","pixels":[1,2]}"#).is_err(),
            "unknown fields are refused as in every message"
        );
        assert_eq!(report.clone().checked().map(|r| r.video.len()), Ok(1));
        let mut tall = report.clone();
        tall.video[0].height = 100_000;
        let refused = tall.checked().expect_err("beyond any camera");
        assert_eq!(refused.code, ErrorCode::InvalidMessage);
        assert!(refused.message.contains("100000 px"), "{}", refused.message);
        let many = QualityReport {
            video: vec![report.video[0]; MAX_REPORTED_VIDEOS + 1],
            ..report
        };
        assert!(many.checked().is_err());
        assert!(parse(r#"{"v":1,"type":"quality","video":[{"height":-1,"fps":30}]}"#).is_err());
    }

    #[test]
    fn every_error_code_reads_as_it_serializes() {
        use ErrorCode::*;
        for code in [
            MalformedJson,
            UnsupportedVersion,
            UnknownType,
            InvalidMessage,
            TooLarge,
            BinaryFrame,
            JoinFirst,
            AlreadyJoined,
            TokenRefused,
            RoomFull,
            InvalidSdp,
            NoPendingOffer,
            MediaEncryptionRefused,
            NotAvailable,
            Internal,
            NotHost,
            Waiting,
            MeetingLocked,
            Expelled,
            Denied,
            MeetingEnded,
            IdleTimeout,
            TokenExpired,
            VisitNotOpenYet,
            VisitCancelled,
            LinkOpenedElsewhere,
            LinkReplaced,
            NoSuchParticipant,
            PasscodeRefused,
            PasscodeCoolDown,
            ChatRefused,
        ] {
            assert_eq!(serde_json::to_value(code).expect("json"), code.as_str());
        }
    }

    #[test]
    fn a_join_parses() {
        let m = parse(r#"{"v":1,"type":"join","room":"visit-42","token":"abc"}"#).expect("join");
        assert_eq!(
            m,
            ClientMessage::Join {
                v: 1,
                room: "visit-42".into(),
                token: "abc".into(),
                display_name: None,
                passcode: None,
            }
        );
    }

    #[test]
    fn each_bad_input_gets_its_own_code_and_a_readable_message() {
        let cases: &[(&str, ErrorCode, &str)] = &[
            ("{", ErrorCode::MalformedJson, "not a JSON"),
            ("[1,2]", ErrorCode::InvalidMessage, "JSON object"),
            (
                r#"{"type":"join"}"#,
                ErrorCode::UnsupportedVersion,
                "version 1",
            ),
            (
                r#"{"v":2,"type":"join"}"#,
                ErrorCode::UnsupportedVersion,
                "version 2",
            ),
            (r#"{"v":1}"#, ErrorCode::InvalidMessage, "no \"type\""),
            (
                r#"{"v":1,"type":"dance"}"#,
                ErrorCode::UnknownType,
                "known types: join",
            ),
            (
                r#"{"v":1,"type":"join","room":"r"}"#,
                ErrorCode::InvalidMessage,
                "token",
            ),
            (
                r#"{"v":1,"type":"join","room":"Jane Doe","token":"t"}"#,
                ErrorCode::InvalidMessage,
                "opaque id",
            ),
            (
                r#"{"v":1,"type":"offer","sdp":7}"#,
                ErrorCode::InvalidMessage,
                "offer",
            ),
            (
                r#"{"v":1,"type":"leave","extra":true}"#,
                ErrorCode::InvalidMessage,
                "unknown field",
            ),
        ];
        for (input, code, words) in cases {
            let err = parse(input).expect_err(input);
            assert_eq!(err.code, *code, "{input}: {err}");
            assert!(err.message.contains(words), "{input}: {err}");
        }
    }

    #[test]
    fn oversized_messages_are_refused_before_parsing() {
        let huge = format!(
            r#"{{"v":1,"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(parse(&huge).expect_err("huge").code, ErrorCode::TooLarge);
    }

    #[test]
    fn server_messages_carry_the_version_and_a_kebab_case_type() {
        let json = ServerMessage::ParticipantLeft {
            v: PROTOCOL_VERSION,
            participant_id: "p1".into(),
            reason: LeaveReason::Left,
        }
        .to_json();
        assert_eq!(
            json,
            r#"{"type":"participant-left","v":1,"participantId":"p1","reason":"left"}"#
        );
    }

    #[test]
    fn no_reply_repeats_what_the_client_sent() {
        let canary = r"CANARY\u0022, expected x";
        let inputs = [
            format!(r#"{{"v":1,"type":"{canary}"}}"#),
            format!(r#"{{"v":1,"type":"join","room":"r","token":"t","{canary}":1}}"#),
            format!(r#"{{"v":1,"type":"join","room":"r","token":7,"passcode":"{canary}"}}"#),
            format!(r#"{{"v":1,"type":"offer","sdp":["{canary}"]}}"#),
            format!(r#"{{"v":1,"type":"mute","participantId":{{"{canary}":1}}}}"#),
            format!(r#"{{"v":1,"type":"lock","locked":"{canary}"}}"#),
            format!(r#"{{"v":1,"type":"join","room":"{canary}","token":"t"}}"#),
            format!(r#"{{"v":1,"type":"join" "{canary}"}}"#),
            format!("CANARY{}", "x".repeat(5000)),
        ];
        for input in inputs {
            let err = parse(&input).expect_err(&input);
            assert!(!err.message.contains("CANARY"), "{input}: {}", err.message);
            assert!(err.message.len() < 300, "{}", err.message.len());
        }
        let err = parse(r#"{"v":1,"type":"lock","locked":"yes"}"#).expect_err("not a bool");
        assert!(
            err.message.ends_with("invalid type, expected a boolean"),
            "what was wrong and what was expected stay: {}",
            err.message
        );
    }

    proptest::proptest! {
        /// Any text, and any message shape with a marker in its type, keys or values: parsing
        /// never panics and no reply carries the marker back.
        #[test]
        fn no_input_panics_the_parser_or_comes_back_in_its_reply(
            text in "\\PC{0,300}",
            kind in proptest::sample::select(vec!["join", "offer", "mute", "lock", "ZQXJ", "candidate"]),
            key in "[a-zA-Z]{0,8}ZQXJ[a-z\\\\\"]{0,4}",
            value in "[ -~]{0,20}ZQXJ[ -~]{0,20}",
        ) {
            let marked = format!("{text}ZQXJ");
            let value = serde_json::Value::String(value).to_string();
            let key = serde_json::Value::String(key).to_string();
            for input in [
                marked,
                format!(r#"{{"v":1,"type":"{kind}",{key}:{value}}}"#),
                format!(r#"{{"v":1,"type":"{kind}","room":{value},"token":{value}}}"#),
                format!(r#"{{"v":1,"type":"{kind}","locked":{value},"sdp":[{value}]}}"#),
            ] {
                if let Err(e) = parse(&input) {
                    proptest::prop_assert!(!e.message.contains("ZQXJ"), "{input}: {}", e.message);
                }
            }
        }
    }
}
