//! What a media node reports of itself for its tenant's status and compliance evidence:
//! served by the node (`/audit/health`, `/evidence`) and read by the operator, one definition.
//! PHI-free: counts, states and reasons, never a participant, a room or an address.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node's `/evidence`: what it enforces and what it has seen, checked by the operator
/// against what it rendered (docs/hipaa.md, the live evidence report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvidence {
    pub audit: AuditHealthReport,
    /// The node's check of its audit records at rest against the chain's head.
    pub chain: ChainCheck,
    /// Completed media sessions since the node started, by negotiated SRTP profile.
    #[serde(default)]
    pub srtp_sessions: BTreeMap<String, u64>,
    /// The SRTP profiles the node's crypto policy lets DTLS negotiate.
    #[serde(default)]
    pub srtp_allowed: Vec<String>,
    /// The automatic logoff the node enforces, in seconds (from the config it runs).
    pub idle_timeout_seconds: u64,
    /// `meetings.mediaEncryption` as the node runs it.
    pub media_encryption: String,
}

/// What a node found when it read its audit records back from its disk (its sinks' buffers
/// and the chain's tail) and checked them against the chain's head it holds in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainCheck {
    /// The seq of the last record sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<u64>,
    /// Records read back and verified.
    pub records_checked: u64,
    /// When, in Unix seconds.
    pub checked_at: i64,
    /// What is broken, in the verifier's words; none when every record read verifies up to
    /// the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

/// The node's `/audit/health` answer: what the node serves and the operator reads, one type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditHealthReport {
    pub sinks: Vec<SinkReport>,
    /// Some sink's buffer is past its size.
    #[serde(default)]
    pub buffer_full: bool,
    /// Joins are refused until the sinks catch up.
    #[serde(default)]
    pub refusing_joins: bool,
    #[serde(default)]
    pub when_buffer_full: crate::event::BufferFullPolicy,
}

/// Whether a sink takes deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkState {
    /// Nothing delivered or failed yet.
    Unknown,
    Up,
    Down,
}

/// One sink, as the node's `/audit/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkReport {
    pub sink: usize,
    /// `syslog` or `webhook`.
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    pub state: SinkState,
    /// The last failure's reason while down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'static, str>>,
    #[serde(default)]
    pub buffered_bytes: u64,
}
