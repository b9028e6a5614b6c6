//! The tamper-evident chain (45 CFR 164.312(c)(1)): each record carries its sequence number,
//! the SHA-256 of the previous record's line and an HMAC-SHA-256 of its own content under the
//! tenant's audit key. Changing, removing, reordering or inserting a record, or sealing with
//! another key, breaks the chain at a place [`verify`] names.

use aws_lc_rs::{digest, hmac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::AuditEvent;

/// The `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The shortest audit key accepted (the operator generates 32 bytes).
pub const MIN_KEY_BYTES: usize = 32;

/// One sealed record: one JSON line in a sink.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    /// UTC, RFC 3339.
    pub time: Timestamp,
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hex SHA-256 of the previous record's line ([`GENESIS`] for the first).
    pub prev: String,
    /// Hex HMAC-SHA-256, under the tenant's audit key, of this record without `mac`.
    pub mac: String,
}

/// The fields the MAC covers: everything but the MAC itself, in a fixed order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Sealed<'a> {
    seq: u64,
    time: &'a Timestamp,
    #[serde(flatten)]
    event: &'a AuditEvent,
    prev: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(
        "the audit key is {0} bytes; at least {MIN_KEY_BYTES} are needed (the operator generates 32)"
    )]
    KeyTooShort(usize),
    #[error("an audit record could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a record's line, as the next record's `prev`.
pub fn line_hash(line: &str) -> String {
    hex(digest::digest(&digest::SHA256, line.as_bytes()).as_ref())
}

/// The sealing key.
#[derive(Clone)]
pub struct AuditKey(hmac::Key);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub fn new(key: &[u8]) -> Result<Self, ChainError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(ChainError::KeyTooShort(key.len()));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, key)))
    }

    pub(crate) fn mac(&self, record: &Record) -> Result<String, ChainError> {
        let sealed = serde_json::to_vec(&Sealed {
            seq: record.seq,
            time: &record.time,
            event: &record.event,
            prev: &record.prev,
        })?;
        Ok(hex(hmac::sign(&self.0, &sealed).as_ref()))
    }

    pub(crate) fn check(&self, record: &Record) -> bool {
        self.mac(record).is_ok_and(|mac| {
            // Constant-time comparison of the MACs.
            aws_lc_rs::constant_time::verify_slices_are_equal(mac.as_bytes(), record.mac.as_bytes())
                .is_ok()
        })
    }
}

/// Appends events to one chain. Pure: the caller writes the lines where they go.
#[derive(Debug)]
pub struct Chain {
    key: AuditKey,
    next_seq: u64,
    prev: String,
}

impl Chain {
    /// A new chain, or one resumed after `last_line` (the last record a sink holds).
    pub fn new(key: AuditKey, last: Option<(&Record, &str)>) -> Self {
        match last {
            Some((record, line)) => Self {
                key,
                next_seq: record.seq + 1,
                prev: line_hash(line),
            },
            None => Self {
                key,
                next_seq: 1,
                prev: GENESIS.to_string(),
            },
        }
    }

    /// The last record sealed: its seq and the hash of its line (none before the first).
    pub fn head(&self) -> Option<(u64, String)> {
        (self.next_seq > 1).then(|| (self.next_seq - 1, self.prev.clone()))
    }

    /// The key records are sealed with, to check records read back.
    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// Seals `event` at `time` and returns the record and its line (no trailing newline).
    pub fn append(
        &mut self,
        event: AuditEvent,
        time: Timestamp,
    ) -> Result<(Record, String), ChainError> {
        let mut record = Record {
            seq: self.next_seq,
            time,
            event,
            prev: self.prev.clone(),
            mac: String::new(),
        };
        record.mac = self.key.mac(&record)?;
        let line = serde_json::to_string(&record)?;
        self.next_seq += 1;
        self.prev = line_hash(&line);
        Ok((record, line))
    }
}
