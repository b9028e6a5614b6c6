//! The media-node config contract: what the operator renders into a ConfigMap and
//! `bedside-media-node` reads at start-up.
//!
//! Unlike the CRD types, the meeting settings here can *express* an unlocked value (a config file
//! can be edited by hand or by a broken renderer), so that [`MediaNodeConfig::validate`] can
//! refuse it by name instead of failing with a bare parse error.

use std::net::SocketAddr;
use std::path::PathBuf;

use kube::core::Duration;
use serde::{Deserialize, Serialize};

use crate::policy::{self, LockedSetting};
pub use crate::tenant::BufferFullPolicy;

/// The config format this build reads and writes.
pub const CONFIG_VERSION: u32 = 1;

/// Everything a media node needs to serve one tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaNodeConfig {
    /// Config format version; this build reads [`CONFIG_VERSION`].
    pub version: u32,
    pub tenant: TenantIdentity,
    pub meetings: MeetingSettings,
    pub network: NetworkSettings,
    pub tls: TlsFiles,
    pub keys: KeyFiles,
    pub audit: AuditSettings,
    /// The visits API for scheduling systems (`/api/v1/visits`); absent: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSettings>,
}

/// The visits API: who may call it and how often.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiSettings {
    /// A directory of credentials, one file each (a mounted Secret: each key a file); the file
    /// name names the caller in the audit trail. Read again while the node runs, so a
    /// credential added to or removed from the Secret takes effect without a restart.
    pub credentials_dir: PathBuf,
    /// Calls per second each credential may make (bursts up to as many).
    #[serde(default = "default_api_rate")]
    pub requests_per_second: u32,
}

/// Enough for a scheduling system booking a day's visits at once; an API caller
/// that goes wild cannot starve the node's visits.
pub const DEFAULT_API_REQUESTS_PER_SECOND: u32 = 100;
pub const MAX_API_REQUESTS_PER_SECOND: u32 = 10_000;

fn default_api_rate() -> u32 {
    DEFAULT_API_REQUESTS_PER_SECOND
}

/// Which tenant this node serves. Names only; no PHI ever lives in config.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantIdentity {
    /// The HealthcareTenant's name; the `tenant` label on every metric.
    pub name: String,
    /// Shown in the web client.
    pub display_name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    Enabled,
    Disabled,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    Required,
    Optional,
}

/// `Optional` would let a peer negotiate a non-AEAD SRTP profile; it exists so that a config
/// asking for it is refused by name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEncryptionMode {
    Required,
    EndToEnd,
    Optional,
}

impl Switch {
    pub fn as_str(self) -> &'static str {
        match self {
            Switch::Enabled => "Enabled",
            Switch::Disabled => "Disabled",
        }
    }
}

impl Requirement {
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::Required => "Required",
            Requirement::Optional => "Optional",
        }
    }
}

impl MediaEncryptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaEncryptionMode::Required => "Required",
            MediaEncryptionMode::EndToEnd => "EndToEnd",
            MediaEncryptionMode::Optional => "Optional",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeetingSettings {
    pub recording: Switch,
    pub chat_persistence: Switch,
    pub waiting_room: Switch,
    pub passcode: Requirement,
    pub media_encryption: MediaEncryptionMode,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub idle_timeout: Duration,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_duration: Duration,
    pub max_participants: u32,
}

impl Default for MeetingSettings {
    /// The locked values and the CRD's defaults.
    fn default() -> Self {
        Self {
            recording: Switch::Disabled,
            chat_persistence: Switch::Disabled,
            waiting_room: Switch::Enabled,
            passcode: Requirement::Required,
            media_encryption: MediaEncryptionMode::Required,
            idle_timeout: policy::MAX_IDLE_TIMEOUT.into(),
            max_duration: policy::DEFAULT_MEETING_DURATION.into(),
            max_participants: policy::DEFAULT_MAX_PARTICIPANTS,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSettings {
    /// WebSocket-over-TLS signaling and the web client.
    pub signaling_listen: SocketAddr,
    /// The one UDP port all peers share.
    pub media_listen: SocketAddr,
    /// Media loops to run, rooms spread over them (one per core forwards the most). Absent:
    /// one per CPU the node may use, which in a pod is its CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_loops: Option<u16>,
    /// The address browsers send media to (the media Service's LoadBalancer or NodePort
    /// address). Absent until the operator knows it; the node then refuses joins, saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_media_address: Option<SocketAddr>,
    /// Where each pod finds its own advertised address when it is not fixed above: a
    /// directory (the operator's addresses ConfigMap, mounted) holding one file per pod, named
    /// after the pod, with `host:port` in it. The node re-reads its file as the kubelet updates
    /// it, and is not Ready until the file names a usable address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_media_address_dir: Option<PathBuf>,
    /// Prometheus metrics, on a port of its own.
    pub metrics_listen: SocketAddr,
    /// What one client network may take of the node (defaults suit a clinic behind one NAT).
    /// Left out when default: a rendered config (and its hash, which rolls the pods) stays as
    /// it was for every tenant that does not set them.
    #[serde(default, skip_serializing_if = "ClientLimits::is_default")]
    pub client_limits: ClientLimits,
    /// The tenant's TURN relay, for browsers whose network lets nothing out but TCP 443
    /// (docs/media-node.md#turn-relay). Absent: browsers get no relay, only the node's own UDP
    /// and TCP candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelaySettings>,
}

/// A TURN relay (coturn) that shares a secret with the node: the node hands each joining
/// browser a username and password derived from it (coturn's `use-auth-secret` scheme) that
/// stop working when the join token does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelaySettings {
    /// The TURN URLs browsers are given, e.g. `turns:relay.mercy.example:443?transport=tcp`.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`, alone in a file (a mounted Secret). Read again while the
    /// node runs, so a rotated secret takes effect without a restart.
    pub shared_secret_file: PathBuf,
}

/// More would only slow every browser's ICE gathering.
pub const MAX_RELAY_URLS: usize = 4;

impl RelaySettings {
    /// What is wrong with the URLs, if anything (RFC 7065 `turn:` and `turns:` only).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.urls.is_empty() || self.urls.len() > MAX_RELAY_URLS {
            problems.push(format!(
                "lists {} URL(s); give between 1 and {MAX_RELAY_URLS}",
                self.urls.len()
            ));
        }
        for url in &self.urls {
            let scheme_ok = url.starts_with("turn:") || url.starts_with("turns:");
            let host = url
                .split_once(':')
                .map(|(_, rest)| rest)
                .unwrap_or_default();
            if !scheme_ok || host.is_empty() || url.chars().any(char::is_whitespace) {
                problems.push(format!(
                    "{url:?} is not a TURN URL; write turns:HOST:443?transport=tcp or turn:HOST:3478"
                ));
            }
        }
        problems
    }
}

/// Bounds that keep a hostile or broken client from hurting other visits. A client network is
/// an IPv4 address or an IPv6 /64 (one home or one phone's allocation).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientLimits {
    /// Open signaling connections from one client network.
    #[serde(default = "ClientLimits::default_connections_per_network")]
    pub connections_per_network: u32,
    /// Open signaling connections in all.
    #[serde(default = "ClientLimits::default_connections")]
    pub connections: u32,
    /// Join attempts per minute from one client network (a burst of as many is allowed), checked
    /// before the token is even read.
    #[serde(default = "ClientLimits::default_join_attempts_per_minute")]
    pub join_attempts_per_minute: u32,
}

impl ClientLimits {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn default_connections_per_network() -> u32 {
        200
    }
    fn default_connections() -> u32 {
        4000
    }
    fn default_join_attempts_per_minute() -> u32 {
        60
    }
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            connections_per_network: Self::default_connections_per_network(),
            connections: Self::default_connections(),
            join_attempts_per_minute: Self::default_join_attempts_per_minute(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Key material by file path (mounted Secrets); keys never appear in the config itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyFiles {
    pub join_token_key_file: PathBuf,
    pub audit_hmac_key_file: PathBuf,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSettings {
    pub retention_days: u32,
    /// Where records wait while a sink is down (an emptyDir or PVC).
    pub buffer_dir: PathBuf,
    pub sinks: Vec<AuditSinkSettings>,
    /// Bytes each network sink may hold in the buffer before the policy applies.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: u64,
    #[serde(default)]
    pub when_buffer_full: BufferFullPolicy,
}

fn default_buffer_bytes() -> u64 {
    u64::from(crate::tenant::DEFAULT_AUDIT_BUFFER_MIB) << 20
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum AuditSinkSettings {
    Stdout,
    #[serde(rename_all = "camelCase")]
    Syslog {
        address: String,
        ca_file: PathBuf,
    },
    #[serde(rename_all = "camelCase")]
    Webhook {
        url: String,
        token_file: PathBuf,
    },
}

/// One thing wrong with a config, by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigViolation {
    /// Dotted path in the config file, e.g. `meetings.recording`.
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for ConfigViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the media-node config is not valid YAML for this version of bedside: {0} (the format is in docs/api.md, \"Media-node config\")"
    )]
    Parse(#[from] serde_yaml::Error),
    #[error("the media-node config breaks {} rule(s); the node will not start until it is fixed:\n{}", .0.len(), list(.0))]
    Invalid(Vec<ConfigViolation>),
}

fn list(violations: &[ConfigViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("  - {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl MediaNodeConfig {
    /// Parses and validates a config file's text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config types always serialize")
    }

    /// Refuses any config that unlocks a BAA-locked setting or leaves a bound, naming every
    /// offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut v = Violations::default();
        if self.version != CONFIG_VERSION {
            v.refuse(
                "version",
                format!(
                    "this node reads config version {CONFIG_VERSION}, not {}; run a node and operator of the same release",
                    self.version
                ),
            );
        }
        if self.tenant.name.trim().is_empty() {
            v.refuse("tenant.name", "must name the HealthcareTenant".into());
        }
        self.check_meetings(&mut v);
        self.check_network_and_api(&mut v);
        self.check_audit(&mut v);
        if v.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(v.0))
        }
    }

    /// The locked meeting settings and the meeting bounds.
    fn check_meetings(&self, v: &mut Violations) {
        let m = &self.meetings;
        let locked: [(&LockedSetting, &str); 5] = [
            (&policy::RECORDING, m.recording.as_str()),
            (&policy::CHAT_PERSISTENCE, m.chat_persistence.as_str()),
            (&policy::WAITING_ROOM, m.waiting_room.as_str()),
            (&policy::PASSCODE, m.passcode.as_str()),
            (&policy::MEDIA_ENCRYPTION, m.media_encryption.as_str()),
        ];
        for (setting, value) in locked {
            if !setting.allows(value) {
                v.refuse(
                    &format!("meetings.{}", setting.field),
                    format!("is {value}, but {}", setting.message()),
                );
            }
        }
        let idle = m.idle_timeout;
        if idle > policy::MAX_IDLE_TIMEOUT || idle < policy::MIN_IDLE_TIMEOUT {
            v.refuse(
                "meetings.idleTimeout",
                format!("is {idle}; automatic logoff needs between 1m and 15m"),
            );
        }
        let max = m.max_duration;
        if max > policy::MAX_MEETING_DURATION || max < policy::MIN_MEETING_DURATION {
            v.refuse(
                "meetings.maxDuration",
                format!("is {max}; meetings must end between 15m and 24h after they start"),
            );
        }
        if !(policy::MIN_PARTICIPANTS..=policy::MAX_PARTICIPANTS).contains(&m.max_participants) {
            v.refuse(
                "meetings.maxParticipants",
                format!(
                    "is {}; must be between {} and {}",
                    m.max_participants,
                    policy::MIN_PARTICIPANTS,
                    policy::MAX_PARTICIPANTS
                ),
            );
        }
    }

    fn check_network_and_api(&self, v: &mut Violations) {
        let n = &self.network;
        for problem in n.relay.iter().flat_map(RelaySettings::problems) {
            v.refuse("network.relay.urls", problem);
        }
        if n.signaling_listen == n.metrics_listen {
            v.refuse(
                "network.metricsListen",
                "must differ from network.signalingListen: metrics are served on a port of their own".into(),
            );
        }

        let l = &n.client_limits;
        for (field, value) in [
            (
                "network.clientLimits.connectionsPerNetwork",
                l.connections_per_network,
            ),
            ("network.clientLimits.connections", l.connections),
            (
                "network.clientLimits.joinAttemptsPerMinute",
                l.join_attempts_per_minute,
            ),
        ] {
            if value == 0 {
                v.refuse(
                    field,
                    "is 0; no client could join: leave it out for the default".into(),
                );
            }
        }
        if l.connections_per_network > l.connections {
            v.refuse(
                "network.clientLimits.connectionsPerNetwork",
                format!(
                    "is {}, over network.clientLimits.connections ({})",
                    l.connections_per_network, l.connections
                ),
            );
        }

        if let Some(api) = &self.api
            && !(1..=MAX_API_REQUESTS_PER_SECOND).contains(&api.requests_per_second)
        {
            v.refuse(
                "api.requestsPerSecond",
                format!(
                    "is {}; must be between 1 and {MAX_API_REQUESTS_PER_SECOND}",
                    api.requests_per_second
                ),
            );
        }
    }

    /// Retention and the sinks every record goes to.
    fn check_audit(&self, v: &mut Violations) {
        let a = &self.audit;
        if a.retention_days < policy::MIN_AUDIT_RETENTION_DAYS {
            v.refuse(
                "audit.retentionDays",
                format!(
                    "is {}; HIPAA requires at least {} days (six years)",
                    a.retention_days,
                    policy::MIN_AUDIT_RETENTION_DAYS
                ),
            );
        }
        if a.sinks.is_empty() {
            v.refuse(
                "audit.sinks",
                "is empty; every audit record must go to at least one sink".into(),
            );
        }
        if a.sinks.len() > policy::MAX_AUDIT_SINKS {
            v.refuse(
                "audit.sinks",
                format!(
                    "has {} sinks; at most {}",
                    a.sinks.len(),
                    policy::MAX_AUDIT_SINKS
                ),
            );
        }
        for (i, sink) in a.sinks.iter().enumerate() {
            if let AuditSinkSettings::Webhook { url, .. } = sink
                && !url.starts_with("https://")
            {
                v.refuse(
                    &format!("audit.sinks[{i}].url"),
                    "must start with https://: audit records travel over TLS only".into(),
                );
            }
        }
    }
}

/// Every offending field of a config, collected so the user fixes them all at once.
#[derive(Default)]
struct Violations(Vec<ConfigViolation>);

impl Violations {
    fn refuse(&mut self, field: &str, problem: String) {
        self.0.push(ConfigViolation {
            field: field.to_string(),
            problem,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> MediaNodeConfig {
        MediaNodeConfig {
            version: CONFIG_VERSION,
            tenant: TenantIdentity {
                name: "mercy-clinic".into(),
                display_name: "Mercy Clinic Telehealth".into(),
            },
            meetings: MeetingSettings::default(),
            network: NetworkSettings {
                signaling_listen: "0.0.0.0:8443".parse().expect("addr"),
                media_listen: "0.0.0.0:3478".parse().expect("addr"),
                media_loops: None,
                advertised_media_address: Some("203.0.113.10:3478".parse().expect("addr")),
                advertised_media_address_dir: None,
                metrics_listen: "0.0.0.0:9090".parse().expect("addr"),
                client_limits: Default::default(),
                relay: None,
            },
            tls: TlsFiles {
                cert_file: "/etc/bedside/tls/tls.crt".into(),
                key_file: "/etc/bedside/tls/tls.key".into(),
            },
            keys: KeyFiles {
                join_token_key_file: "/etc/bedside/keys/join-token".into(),
                audit_hmac_key_file: "/etc/bedside/keys/audit-hmac".into(),
            },
            audit: AuditSettings {
                retention_days: 2190,
                buffer_dir: "/var/lib/bedside/audit".into(),
                sinks: vec![
                    AuditSinkSettings::Stdout,
                    AuditSinkSettings::Webhook {
                        url: "https://siem.example/ingest".into(),
                        token_file: "/etc/bedside/sinks/1/token".into(),
                    },
                ],
                buffer_bytes: 256 << 20,
                when_buffer_full: BufferFullPolicy::RefuseJoins,
            },
            api: Some(ApiSettings {
                credentials_dir: "/etc/bedside/api".into(),
                requests_per_second: DEFAULT_API_REQUESTS_PER_SECOND,
            }),
        }
    }

    #[test]
    fn an_api_rate_outside_its_bounds_is_named() {
        let mut config = valid();
        if let Some(api) = config.api.as_mut() {
            api.requests_per_second = 0;
        }
        assert_eq!(
            fields(config.validate().expect_err("refused")),
            ["api.requestsPerSecond"]
        );
    }

    #[test]
    fn a_relay_url_that_is_not_turn_is_named_with_the_form_to_write() {
        let mut config = valid();
        config.network.relay = Some(RelaySettings {
            urls: vec![
                "turns:relay.mercy.example:443?transport=tcp".into(),
                "https://relay.mercy.example".into(),
            ],
            shared_secret_file: "/etc/bedside/relay/secret".into(),
        });
        let Err(ConfigError::Invalid(violations)) = config.validate() else {
            panic!("an https URL is no TURN server");
        };
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "network.relay.urls");
        assert!(
            violations[0].problem.contains("turns:HOST:443"),
            "{violations:?}"
        );
        if let Some(relay) = config.network.relay.as_mut() {
            relay.urls.truncate(1);
        }
        let parsed =
            MediaNodeConfig::from_yaml(&config.to_yaml()).expect("one turns: URL is valid");
        assert_eq!(parsed, config);
    }

    fn fields(err: ConfigError) -> Vec<String> {
        match err {
            ConfigError::Invalid(v) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected violations, got {other}"),
        }
    }

    #[test]
    fn a_locked_config_round_trips_through_yaml_and_validates() {
        let config = valid();
        let parsed = MediaNodeConfig::from_yaml(&config.to_yaml()).expect("valid config");
        assert_eq!(parsed, config);
    }

    #[test]
    fn each_unlocked_setting_is_refused_by_its_field_name() {
        let mut config = valid();
        config.meetings.recording = Switch::Enabled;
        config.meetings.chat_persistence = Switch::Enabled;
        config.meetings.waiting_room = Switch::Disabled;
        config.meetings.passcode = Requirement::Optional;
        config.meetings.media_encryption = MediaEncryptionMode::Optional;
        let err = config.validate().expect_err("unlocked");
        let text = err.to_string();
        assert!(text.contains("PHI"), "{text}");
        assert_eq!(
            fields(err),
            [
                "meetings.recording",
                "meetings.chatPersistence",
                "meetings.waitingRoom",
                "meetings.passcode",
                "meetings.mediaEncryption"
            ]
        );
    }

    #[test]
    fn end_to_end_encryption_is_an_allowed_mode() {
        let mut config = valid();
        config.meetings.media_encryption = MediaEncryptionMode::EndToEnd;
        config.validate().expect("EndToEnd is encrypted");
    }

    #[test]
    fn bounds_are_refused_with_their_limits() {
        let mut config = valid();
        config.meetings.idle_timeout = std::time::Duration::from_secs(16 * 60).into();
        config.meetings.max_duration = std::time::Duration::from_secs(25 * 3600).into();
        config.meetings.max_participants = 1000;
        config.audit.retention_days = 365;
        config.audit.sinks.clear();
        config.version = 2;
        assert_eq!(
            fields(config.validate().expect_err("out of bounds")),
            [
                "version",
                "meetings.idleTimeout",
                "meetings.maxDuration",
                "meetings.maxParticipants",
                "audit.retentionDays",
                "audit.sinks"
            ]
        );
    }

    #[test]
    fn the_lower_bounds_are_refused_too_and_the_message_names_the_range() {
        let mut config = valid();
        config.meetings.idle_timeout = std::time::Duration::from_secs(30).into();
        config.meetings.max_duration = std::time::Duration::from_secs(10 * 60).into();
        config.meetings.max_participants = 1;
        let Err(ConfigError::Invalid(violations)) = config.validate() else {
            panic!("below the lower bounds must be refused");
        };
        let problem = |field: &str| {
            violations
                .iter()
                .find(|v| v.field == field)
                .map(|v| v.problem.clone())
                .unwrap_or_else(|| panic!("{field} is not named: {violations:?}"))
        };
        assert_eq!(
            problem("meetings.idleTimeout"),
            "is 30s; automatic logoff needs between 1m and 15m"
        );
        assert!(problem("meetings.maxDuration").contains("between 15m and 24h"));
        assert!(problem("meetings.maxParticipants").contains("is 1; must be between"));
        // The bounds themselves are allowed.
        let mut config = valid();
        config.meetings.idle_timeout = policy::MIN_IDLE_TIMEOUT.into();
        config.meetings.max_duration = policy::MIN_MEETING_DURATION.into();
        config.meetings.max_participants = policy::MIN_PARTICIPANTS;
        assert!(config.validate().is_ok(), "{:?}", config.validate());
    }

    #[test]
    fn a_plain_http_webhook_is_refused() {
        let mut config = valid();
        config.audit.sinks = vec![AuditSinkSettings::Webhook {
            url: "http://siem.example/ingest".into(),
            token_file: "/t".into(),
        }];
        assert_eq!(
            fields(config.validate().expect_err("http")),
            ["audit.sinks[0].url"]
        );
    }

    #[test]
    fn a_misspelled_field_is_a_parse_error_not_a_silent_default() {
        let text = valid().to_yaml().replace("recording:", "recordng:");
        let err = MediaNodeConfig::from_yaml(&text).expect_err("typo");
        assert!(err.to_string().contains("recordng"), "{err}");
    }
}
