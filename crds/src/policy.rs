//! What a Business Associate Agreement fixes in place, and why.
//!
//! Named once here and used three times over: by the CRD's CEL rules (so `kubectl apply`
//! refuses an unlocked tenant), by the operator's renderer (which writes the locked values
//! whatever it is given) and by the media node's config check (which refuses to start on a
//! config that unlocks them). docs/api.md quotes the same reasons.

use std::time::Duration;

/// One setting a BAA locks: its field under `spec.meetings` (and in the node config), the only
/// value(s) it may take, and the reason a person applying the YAML is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedSetting {
    /// Field name under `spec.meetings` and `meetings` in the node config.
    pub field: &'static str,
    /// The values the BAA allows; the first is the default.
    pub allowed: &'static [&'static str],
    /// Why the value is locked, in words for a platform team.
    pub reason: &'static str,
}

impl LockedSetting {
    /// The sentence shown when the setting is unlocked.
    pub fn message(&self) -> String {
        format!(
            "{} must be {}: {}",
            self.field,
            self.allowed.join(" or "),
            self.reason
        )
    }

    /// The locked default.
    pub fn default_value(&self) -> &'static str {
        self.allowed[0]
    }

    /// Whether `value` is one the BAA allows.
    pub fn allows(&self, value: &str) -> bool {
        self.allowed.contains(&value)
    }
}

pub const RECORDING: LockedSetting = LockedSetting {
    field: "recording",
    allowed: &["Disabled"],
    reason: "a recording of a visit is PHI at rest, and the BAA allows bedside to be a conduit \
             only, never a store of PHI",
};

pub const CHAT_PERSISTENCE: LockedSetting = LockedSetting {
    field: "chatPersistence",
    allowed: &["Disabled"],
    reason: "chat between clinician and patient is PHI; it is relayed to the call and never \
             written, because the BAA forbids storing PHI",
};

pub const WAITING_ROOM: LockedSetting = LockedSetting {
    field: "waitingRoom",
    allowed: &["Enabled"],
    reason: "a host must admit each participant so that nobody joins a visit unseen \
             (45 CFR 164.312(a)(1) access control)",
};

pub const PASSCODE: LockedSetting = LockedSetting {
    field: "passcode",
    allowed: &["Required"],
    reason: "a meeting link alone must not let anyone into a visit \
             (45 CFR 164.312(d) person or entity authentication)",
};

pub const MEDIA_ENCRYPTION: LockedSetting = LockedSetting {
    field: "mediaEncryption",
    allowed: &["Required", "EndToEnd"],
    reason: "audio and video of a visit are PHI in transit and must be encrypted with AES-GCM \
             (45 CFR 164.312(e) transmission security); EndToEnd also keeps the keys off the server",
};

/// Every locked setting, in the order docs and error lists show them.
pub const LOCKED_SETTINGS: [LockedSetting; 5] = [
    RECORDING,
    CHAT_PERSISTENCE,
    WAITING_ROOM,
    PASSCODE,
    MEDIA_ENCRYPTION,
];

/// 45 CFR 164.312(a)(2)(iii): automatic logoff. Idle participants go after at most this long.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Shorter than this and a participant reading a chart would be dropped mid-visit.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How the default is written in the CRD schema.
pub const DEFAULT_IDLE_TIMEOUT_TEXT: &str = "15m";

/// A meeting ends at its maximum duration; a day bounds a forgotten open room.
pub const MAX_MEETING_DURATION: Duration = Duration::from_secs(24 * 3600);
pub const MIN_MEETING_DURATION: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_MEETING_DURATION: Duration = Duration::from_secs(4 * 3600);
pub const DEFAULT_MEETING_DURATION_TEXT: &str = "4h";

/// A media node told to stop (a rolling update, a scale-down, a node drained) takes no new
/// visits but lets the ones in progress run to their end, for at most this long: the tenant's
/// maximum meeting duration, capped so a rollout is not held up for a day.
pub const MAX_DRAIN_GRACE: Duration = Duration::from_secs(2 * 3600);

/// How long a stopping media node keeps its calls: see [`MAX_DRAIN_GRACE`].
pub fn drain_grace(max_meeting_duration: Duration) -> Duration {
    max_meeting_duration.min(MAX_DRAIN_GRACE)
}

/// 45 CFR 164.316(b)(2)(i): documentation is retained six years.
pub const MIN_AUDIT_RETENTION_DAYS: u32 = 2190;
/// A century; anything longer is a typo.
pub const MAX_AUDIT_RETENTION_DAYS: u32 = 36_500;

pub const MIN_PARTICIPANTS: u32 = 2;
/// The SFU fans each published track out to every other participant; past this a visit is a
/// webinar, which bedside is not built for.
pub const MAX_PARTICIPANTS: u32 = 100;
pub const DEFAULT_MAX_PARTICIPANTS: u32 = 50;

pub const MAX_REPLICAS: i32 = 20;
pub const DEFAULT_REPLICAS: i32 = 2;

pub const MAX_AUDIT_SINKS: usize = 8;
pub const MAX_DNS_NAMES: usize = 16;

/// Child objects are named `<tenant>-<suffix>` and must stay within the 63 characters of a
/// DNS label, so tenant names are kept short.
pub const MAX_TENANT_NAME_LEN: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_node_keeps_its_calls_for_the_meeting_length_at_most_two_hours() {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(drain_grace(minutes(90)), minutes(90));
        assert_eq!(drain_grace(DEFAULT_MEETING_DURATION), MAX_DRAIN_GRACE);
    }

    #[test]
    fn every_locked_setting_explains_itself_in_its_message() {
        for setting in LOCKED_SETTINGS {
            let message = setting.message();
            assert!(message.starts_with(setting.field), "{message}");
            assert!(message.contains(setting.default_value()), "{message}");
            assert!(message.len() > 60, "reason too thin: {message}");
        }
    }

    #[test]
    fn media_encryption_accepts_both_encrypted_modes_and_nothing_else() {
        assert!(MEDIA_ENCRYPTION.allows("Required"));
        assert!(MEDIA_ENCRYPTION.allows("EndToEnd"));
        assert!(!MEDIA_ENCRYPTION.allows("Disabled"));
        assert!(!MEDIA_ENCRYPTION.allows("required"));
    }
}
