//! `HealthcareTenant` (`bedside.health/v1alpha1`): one health system's telehealth service.
//!
//! The struct docs become the CRD's field descriptions (`kubectl explain`). The rules that keep
//! a BAA's promises live in the schema itself: OpenAPI enums and bounds (enforced by every API
//! server, including old ones) and CEL `x-kubernetes-validations` whose messages say why.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::{Duration, Message, Reason, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{self, LockedSetting};

/// Go-style durations as Kubernetes writes them: `90s`, `15m`, `4h`, `1h30m`.
/// Go durations whose every number has at most 5 digits (with at most [`DURATION_MAX_LENGTH`]
/// characters, under 60 years): what the API server stores, the operator can always read
/// (`crate::duration`).
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}(\.[0-9]{1,5})?(ns|us|µs|ms|s|m|h))+$";
pub const DURATION_MAX_LENGTH: u32 = 32;
/// A DNS-1123 subdomain: the name of a Secret or an Issuer.
pub const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS name a certificate may carry (a leading `*.` wildcard allowed).
pub const DNS_NAME_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// `host:port` or `[ipv6]:port`.
pub const HOST_PORT_PATTERN: &str =
    r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):[0-9]{1,5}$";
/// Leading or trailing blanks in an agreement id are a copy-paste error, never part of it.
pub const BAA_REFERENCE_PATTERN: &str = r"^\S(.*\S)?$";

/// A health system's telehealth service: media nodes with the settings its Business Associate
/// Agreement (BAA) mandates locked in place, TLS, and audit records sent to its sinks.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bedside.health",
    version = "v1alpha1",
    kind = "HealthcareTenant",
    plural = "healthcaretenants",
    shortname = "hct",
    category = "bedside",
    namespaced,
    status = "HealthcareTenantStatus",
    doc = "A health system's telehealth service: locked-down media nodes, TLS and audit sinks, run under a signed Business Associate Agreement.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the tenant's media nodes serve calls"),
    printcolumn(name = "BAA", type_ = "string", json_path = ".status.conditions[?(@.type==\"BAAActive\")].status", description = "Whether the Business Associate Agreement is in force today"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.readyMediaNodes", description = "Media nodes ready to take calls"),
    printcolumn(name = "Compliant", type_ = "string", json_path = ".status.conditions[?(@.type==\"Compliant\")].status", description = "Whether every software check of the HIPAA controls passes (the tenant's compliance Report)"),
    printcolumn(name = "Failing", type_ = "integer", json_path = ".status.compliance.fail", description = "Compliance checks failing now"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = tenant_name_rule(),
    validation = tenant_name_is_a_label_rule(),
    validation = relay_needs_load_balancers_rule(),
    validation = relay_has_its_own_name_rule(),
)]
#[serde(rename_all = "camelCase")]
pub struct HealthcareTenantSpec {
    /// The name clinicians and patients see in the web client, e.g. "Mercy Clinic Telehealth".
    #[schemars(length(min = 1, max = 100))]
    pub display_name: String,

    /// The signed Business Associate Agreement this tenant runs under. Media stops when it has
    /// expired or is not yet signed.
    pub baa: BusinessAssociateAgreement,

    /// Meeting settings. Those a BAA mandates are locked: each accepts only its locked value,
    /// and may be omitted (the locked value is the default).
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub meetings: MeetingPolicy,

    /// The media nodes (WebRTC SFU) that carry the tenant's calls.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub media_nodes: MediaNodes,

    /// The certificate for the tenant's signaling endpoint: exactly one of issuerRef or secretName.
    pub tls: TlsConfig,

    /// Where audit records go and how long they are kept.
    pub audit: AuditConfig,

    /// Prometheus integration.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub monitoring: Monitoring,

    /// A TURN relay (TURN over TLS on port 443) for browsers on networks that let nothing out
    /// but TCP 443. Absent: browsers reach the media nodes directly (UDP, else ICE-TCP) only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<Relay>,
}

fn tenant_name_rule() -> Rule {
    Rule::new(format!(
        "size(self.metadata.name) <= {}",
        policy::MAX_TENANT_NAME_LEN
    ))
    .message(Message::Message(format!(
        "metadata.name must be at most {} characters: the operator names each child object \
         <tenant>-<part>, which must fit in a 63-character DNS label",
        policy::MAX_TENANT_NAME_LEN
    )))
    .field_path(".metadata.name")
}

/// A name with a '.' is a valid object name but not a valid Service name: refused here rather
/// than failing every reconcile afterwards.
fn tenant_name_is_a_label_rule() -> Rule {
    Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message(Message::Message(
            "metadata.name must be lower case letters, digits and '-' (no '.'): the operator \
             names the tenant's Services after it, and a Service name is a DNS label"
                .into(),
        ))
        .field_path(".metadata.name")
}

/// The relay forwards only to the media nodes' load balancer addresses; a NodePort tenant's
/// media address is a name or the cluster nodes' address, which no allow list can pin.
fn relay_needs_load_balancers_rule() -> Rule {
    Rule::new(
        "!has(self.spec.relay) || !has(self.spec.mediaNodes) || !has(self.spec.mediaNodes.serviceType) || self.spec.mediaNodes.serviceType == 'LoadBalancer'",
    )
    .message(Message::Message(
        "spec.relay needs mediaNodes.serviceType LoadBalancer: the relay may forward only to \
         the media nodes' own load balancer addresses; remove spec.relay or switch to LoadBalancer"
            .into(),
    ))
    .field_path(".spec.relay")
}

/// The relay has a load balancer address of its own, so a name of its own.
fn relay_has_its_own_name_rule() -> Rule {
    Rule::new("!has(self.spec.relay) || !(self.spec.relay.hostname in self.spec.tls.dnsNames)")
        .message(Message::Message(
            "spec.relay.hostname must differ from every tls.dnsNames entry: the relay has its \
             own load balancer address, e.g. relay.<your signaling name>"
                .into(),
        ))
        .field_path(".spec.relay.hostname")
}

/// The Business Associate Agreement (45 CFR 164.308(b)) between the health system and the
/// operator of this bedside installation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.expiresOn) || self.expiresOn > self.signedOn")
        .message("baa.expiresOn must be after baa.signedOn: an agreement cannot end before it was signed")
        .field_path(".expiresOn"),
    validation = Rule::new("self.reference == oldSelf.reference || self.signedOn != oldSelf.signedOn")
        .message("baa.reference may only change together with baa.signedOn: a new reference means a new agreement, which has its own signing date")
        .field_path(".reference"),
    validation = Rule::new("self.signedOn >= oldSelf.signedOn")
        .message("baa.signedOn may not move back in time: replace an agreement only with a newer one")
        .field_path(".signedOn"),
)]
pub struct BusinessAssociateAgreement {
    /// The signed agreement's identifier in the health system's contract register,
    /// e.g. BAA-2026-0042. Required: bedside serves PHI only under a signed BAA.
    #[schemars(length(min = 1, max = 128), regex(pattern = BAA_REFERENCE_PATTERN))]
    #[x_kube(validation = Rule::new("size(self) > 0")
        .message("baa.reference must name the signed agreement: bedside serves PHI only under a Business Associate Agreement")
        .reason(Reason::FieldValueRequired))]
    pub reference: String,

    /// The day the agreement was signed (YYYY-MM-DD).
    #[schemars(with = "String", extend("format" = "date"))]
    pub signed_on: jiff::civil::Date,

    /// The last day the agreement is in force (YYYY-MM-DD). After it, media nodes stop and the
    /// BAAActive condition turns False. Omit for an agreement without an end date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date"))]
    pub expires_on: Option<jiff::civil::Date>,
}

/// Recording of calls. Locked: Disabled.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordingPolicy {
    #[default]
    Disabled,
}

/// Storing chat messages. Locked: Disabled (chat is relayed, never written).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChatPersistencePolicy {
    #[default]
    Disabled,
}

/// Holding non-hosts in a waiting room until a host admits them. Locked: Enabled.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WaitingRoomPolicy {
    #[default]
    Enabled,
}

/// A passcode to enter a meeting. Locked: Required.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PasscodePolicy {
    #[default]
    Required,
}

/// Media encryption: Required (DTLS-SRTP with AES-GCM, the node forwards) or EndToEnd (frames
/// are also encrypted in the browsers with keys the node never sees).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MediaEncryptionPolicy {
    #[default]
    Required,
    EndToEnd,
}

fn locked_rule(setting: &LockedSetting) -> Rule {
    let allowed: Vec<String> = setting.allowed.iter().map(|v| format!("'{v}'")).collect();
    Rule::new(format!("self in [{}]", allowed.join(", ")))
        .message(Message::Message(setting.message()))
        .reason(Reason::FieldValueForbidden)
}

fn duration_at_most(max: std::time::Duration, message: String) -> Rule {
    Rule::new(format!("duration(self) <= duration('{}s')", max.as_secs()))
        .message(Message::Message(message))
}

fn duration_at_least(min: std::time::Duration, message: String) -> Rule {
    Rule::new(format!("duration(self) >= duration('{}s')", min.as_secs()))
        .message(Message::Message(message))
}

/// Meeting settings. The five BAA-locked settings accept only their locked value; omit them to
/// get it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeetingPolicy {
    /// Locked to Disabled: a recording of a visit is PHI at rest.
    #[serde(default)]
    #[x_kube(validation = locked_rule(&policy::RECORDING))]
    pub recording: RecordingPolicy,

    /// Locked to Disabled: chat is relayed to the call and never written.
    #[serde(default)]
    #[x_kube(validation = locked_rule(&policy::CHAT_PERSISTENCE))]
    pub chat_persistence: ChatPersistencePolicy,

    /// Locked to Enabled: a host admits each participant.
    #[serde(default)]
    #[x_kube(validation = locked_rule(&policy::WAITING_ROOM))]
    pub waiting_room: WaitingRoomPolicy,

    /// Locked to Required: every meeting has a passcode.
    #[serde(default)]
    #[x_kube(validation = locked_rule(&policy::PASSCODE))]
    pub passcode: PasscodePolicy,

    /// Required (default) or EndToEnd. Either way media is encrypted with AES-GCM in transit.
    #[serde(default)]
    #[x_kube(validation = locked_rule(&policy::MEDIA_ENCRYPTION))]
    pub media_encryption: MediaEncryptionPolicy,

    /// Automatic logoff (45 CFR 164.312(a)(2)(iii)): a participant idle this long is dropped.
    /// A Go duration between 1m and 15m, e.g. 10m.
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH), extend("default" = policy::DEFAULT_IDLE_TIMEOUT_TEXT))]
    #[x_kube(
        validation = duration_at_most(policy::MAX_IDLE_TIMEOUT, "idleTimeout must be at most 15m: HIPAA automatic logoff (45 CFR 164.312(a)(2)(iii)) ends idle sessions, and a BAA allows no longer".into()),
        validation = duration_at_least(policy::MIN_IDLE_TIMEOUT, "idleTimeout must be at least 1m: shorter would drop a clinician who is reading a chart mid-visit".into()),
    )]
    pub idle_timeout: Duration,

    /// Meetings end this long after they start, with a warning shortly before. A Go duration
    /// between 15m and 24h, e.g. 4h.
    #[serde(
        default = "default_max_duration",
        deserialize_with = "crate::duration::deserialize"
    )]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH), extend("default" = policy::DEFAULT_MEETING_DURATION_TEXT))]
    #[x_kube(
        validation = duration_at_most(policy::MAX_MEETING_DURATION, "maxDuration must be at most 24h: a meeting left open is an unattended door into a visit".into()),
        validation = duration_at_least(policy::MIN_MEETING_DURATION, "maxDuration must be at least 15m: a visit needs time to happen".into()),
    )]
    pub max_duration: Duration,

    /// The most participants one meeting may hold (hosts included), 2 to 100.
    #[serde(default = "default_max_participants")]
    #[schemars(range(min = 2, max = 100))]
    pub max_participants: u32,
}

fn default_idle_timeout() -> Duration {
    policy::MAX_IDLE_TIMEOUT.into()
}

fn default_max_duration() -> Duration {
    policy::DEFAULT_MEETING_DURATION.into()
}

fn default_max_participants() -> u32 {
    policy::DEFAULT_MAX_PARTICIPANTS
}

impl Default for MeetingPolicy {
    fn default() -> Self {
        Self {
            recording: RecordingPolicy::default(),
            chat_persistence: ChatPersistencePolicy::default(),
            waiting_room: WaitingRoomPolicy::default(),
            passcode: PasscodePolicy::default(),
            media_encryption: MediaEncryptionPolicy::default(),
            idle_timeout: default_idle_timeout(),
            max_duration: default_max_duration(),
            max_participants: default_max_participants(),
        }
    }
}

/// How media nodes are exposed to browsers: one UDP port per node behind this Service type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MediaServiceType {
    #[default]
    LoadBalancer,
    NodePort,
}

/// The media nodes (WebRTC SFU) that carry the tenant's calls.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MediaNodes {
    /// How many media nodes run, 1 to 20. The operator scales them to 0 while the BAA is not in
    /// force.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 20))]
    pub replicas: i32,

    /// The media-node container image. Defaults to the image matching the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// CPU and memory for each media node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ComputeResources>,

    /// The Service type for each media node's UDP port: LoadBalancer (default) or NodePort.
    /// Every media node gets a Service of its own, so browsers reach the node that holds
    /// their visit, and only it.
    #[serde(default)]
    pub service_type: MediaServiceType,

    /// With `serviceType: NodePort`: the address (IP or DNS name) at which browsers reach the
    /// cluster's nodes; each media node advertises it with its own node port. Required for
    /// NodePort (without it the media nodes are not Ready and the status says so); ignored for
    /// LoadBalancer, whose addresses come from the load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub public_address: Option<String>,
}

/// CPU and memory for a media node, as in a container's `resources`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ComputeResources {
    /// What the scheduler reserves, e.g. {cpu: "1", memory: 512Mi}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CpuAndMemory>,

    /// The most a media node may use, e.g. {cpu: "2", memory: 1Gi}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CpuAndMemory>,
}

/// Quantities are quoted strings here, not int-or-string: a v1.20 API server cannot build
/// OpenAPI models for an int-or-string field in a CRD, and then silently falls back to untyped
/// server-side apply (every list atomic, status conditions no longer merged by type).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CpuAndMemory {
    /// CPU cores as a quoted quantity, e.g. "500m" or "2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    pub cpu: Option<Quantity>,

    /// Memory as a quoted quantity, e.g. "512Mi" or "2Gi".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    pub memory: Option<Quantity>,
}

/// Kubernetes' own quantity syntax.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

fn quantity(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "pattern": QUANTITY_PATTERN,
    })
}

fn default_replicas() -> i32 {
    policy::DEFAULT_REPLICAS
}

impl Default for MediaNodes {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            image: None,
            resources: None,
            service_type: MediaServiceType::default(),
            public_address: None,
        }
    }
}

/// The tenant's TURN relay (coturn), run by the operator: TURN over TLS on 443 with the
/// tenant's certificate, credentials per join from a secret shared with the media nodes,
/// forwarding only to the tenant's media nodes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Relay {
    /// The DNS name browsers reach the relay at, e.g. relay.meet.mercy.example: point it at
    /// status.relayAddress. With tls.issuerRef the certificate is issued for it too; with
    /// tls.secretName that certificate must cover it.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_NAME_PATTERN))]
    pub hostname: String,

    /// The relay's container image (coturn). Defaults to the relay image matching the
    /// operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// How many relay pods run, 1 to 5.
    #[serde(default = "default_relay_replicas")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,

    /// CPU and memory for each relay pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ComputeResources>,
}

fn default_relay_replicas() -> i32 {
    1
}

/// The certificate for the tenant's signaling endpoint (WebSocket over TLS).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.issuerRef) != has(self.secretName)")
    .message("tls needs exactly one of issuerRef (cert-manager issues the certificate) or secretName (a kubernetes.io/tls Secret you provide): signaling is served over TLS only, from one certificate source"))]
pub struct TlsConfig {
    /// A cert-manager Issuer or ClusterIssuer that issues the certificate for dnsNames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// A kubernetes.io/tls Secret in the tenant's namespace holding the certificate for dnsNames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub secret_name: Option<String>,

    /// The DNS names clinicians and patients reach the tenant at, e.g. meet.mercy.example.
    /// The first one is the endpoint published in status.
    #[schemars(length(min = 1, max = 16), inner(regex(pattern = DNS_NAME_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    pub dns_names: Vec<String>,
}

/// The kind of cert-manager issuer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

/// A reference to a cert-manager issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// The issuer's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,

    /// Issuer (in the tenant's namespace, the default) or ClusterIssuer.
    #[serde(default)]
    pub kind: IssuerKind,
}

/// Where audit records go and how long they are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditConfig {
    /// Days audit records must be kept, at least 2190 (six years, 45 CFR 164.316(b)(2)(i)).
    #[serde(default = "default_retention_days")]
    #[schemars(range(min = 2190, max = 36500))]
    #[x_kube(validation = Rule::new(format!("self >= {}", policy::MIN_AUDIT_RETENTION_DAYS))
        .message("audit.retentionDays must be at least 2190: HIPAA requires six years of retention for audit documentation (45 CFR 164.316(b)(2)(i))"))]
    pub retention_days: u32,

    /// Every sink receives every record; a sink that is down loses nothing (records wait in a
    /// bounded buffer on disk). 1 to 8 sinks.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("size(self) >= 1")
        .message("audit.sinks needs at least one sink: HIPAA audit controls (45 CFR 164.312(b)) require every access to be recorded somewhere the health system can read")
        .reason(Reason::FieldValueRequired))]
    pub sinks: Vec<AuditSink>,

    /// MiB of records each network sink (syslog, webhook) may hold on the media node's disk
    /// while it is down. The operator sizes the buffer volume from it. Default 256.
    #[serde(default = "default_buffer_mib", rename = "bufferMiB")]
    #[schemars(range(min = 16, max = 16384))]
    pub buffer_mib: u32,

    /// What a media node does when a sink's buffer is full. RefuseJoins (the default): calls
    /// in progress go on, new joins are refused with a reason, because HIPAA prefers no
    /// service to unaudited service. KeepServing: joins go on while the buffer grows to twice
    /// its size; past that, joins are refused anyway, as records would otherwise be lost.
    #[serde(default)]
    pub when_buffer_full: BufferFullPolicy,

    /// Keep each media node's audit buffers on a PersistentVolume of its own (one claim per
    /// node, sized from bufferMiB), so records buffered while a sink is down are delivered even
    /// when the node's pod is replaced: evicted, killed with its node, rolled. Without it the
    /// buffers live in the pod (emptyDir): they survive a container restart, not the pod.
    /// `{}` uses the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<AuditStorage>,
}

/// The PersistentVolumes that hold the media nodes' audit buffers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditStorage {
    /// The StorageClass of each node's claim; the cluster's default class when omitted.
    /// Changing it gives new claims to nodes that have none; existing claims keep their class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub storage_class_name: Option<String>,
}

/// What a media node does when an audit sink's buffer is full: the audit trail's own type.
pub use bedside_audit::event::BufferFullPolicy;

/// The default per-sink audit buffer.
pub const DEFAULT_AUDIT_BUFFER_MIB: u32 = 256;

fn default_buffer_mib() -> u32 {
    DEFAULT_AUDIT_BUFFER_MIB
}

fn default_retention_days() -> u32 {
    policy::MIN_AUDIT_RETENTION_DAYS
}

/// One audit sink: exactly one of stdout, syslog or webhook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
#[x_kube(validation = Rule::new("(has(self.stdout) ? 1 : 0) + (has(self.syslog) ? 1 : 0) + (has(self.webhook) ? 1 : 0) == 1")
    .message("each audit sink must set exactly one of stdout, syslog or webhook; list several sinks to send records to several places"))]
pub struct AuditSink {
    /// JSON lines on the media node's standard output, for a cluster log collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdoutSink>,

    /// RFC 5424 syslog over TLS (RFC 5425 framing) to a SIEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<SyslogSink>,

    /// JSON batches POSTed over HTTPS with a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSink>,
}

/// JSON lines on standard output. Takes no settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct StdoutSink {}

/// RFC 5424 syslog over TLS.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyslogSink {
    /// The receiver as host:port, e.g. siem.mercy.example:6514.
    #[schemars(length(min = 3, max = 260), regex(pattern = HOST_PORT_PATTERN))]
    pub address: String,

    /// A Secret in the tenant's namespace whose key ca.crt holds the CA that signed the
    /// receiver's certificate. Required: audit records travel over TLS only.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub ca_secret: String,
}

/// HTTPS webhook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSink {
    /// An https:// URL that accepts JSON batches of audit records.
    #[schemars(length(min = 9, max = 2048), regex(pattern = r"^https://"))]
    #[x_kube(validation = Rule::new("self.startsWith('https://')")
        .message("webhook url must start with https://: audit records name users and client addresses and travel over TLS only (45 CFR 164.312(e))"))]
    pub url: String,

    /// A Secret in the tenant's namespace whose key token holds the bearer token.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub token_secret: String,
}

/// Prometheus integration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// Create a prometheus-operator ServiceMonitor for the media nodes (when that API exists).
    #[serde(default)]
    pub service_monitor: bool,

    /// The namespace Prometheus scrapes from; the NetworkPolicy lets only it reach /metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = OBJECT_NAME_PATTERN))]
    pub namespace: Option<String>,
}

/// What the operator last observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthcareTenantStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, BAAActive, SettingsLocked, CertificateReady, AuditSinksReady and Compliant,
    /// merged by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Media nodes ready to take calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_media_nodes: Option<i32>,

    /// The signaling endpoint browsers connect to, e.g. wss://meet.mercy.example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The relay's load balancer address: where spec.relay.hostname must point (DNS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_address: Option<String>,

    /// The live compliance evidence, summed up: how many checks pass, warn, fail, were not
    /// checked, and how many items are for people to keep (the Report has each one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<ComplianceSummary>,
}

/// The counts of the tenant's compliance Report (openreports.io `Report`, when served).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceSummary {
    pub pass: u32,
    pub warn: u32,
    pub fail: u32,
    pub not_checked: u32,
    pub manual: u32,
    /// The Report's name in the tenant's namespace (none where openreports.io is not served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

/// The condition types in `status.conditions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// Summary: every other condition is True and the media nodes are ready.
    Ready,
    /// The BAA is signed and not expired today.
    BaaActive,
    /// The owned objects carry the locked settings (drift is reverted).
    SettingsLocked,
    /// The signaling certificate exists and is valid.
    CertificateReady,
    /// The media nodes report every audit sink healthy.
    AuditSinksReady,
    /// No software check of the HIPAA controls fails (the tenant's compliance Report).
    Compliant,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::BaaActive => "BAAActive",
            ConditionType::SettingsLocked => "SettingsLocked",
            ConditionType::CertificateReady => "CertificateReady",
            ConditionType::AuditSinksReady => "AuditSinksReady",
            ConditionType::Compliant => "Compliant",
        }
    }
}

impl AuditSink {
    /// The one destination this sink names (the CRD guarantees exactly one).
    pub fn destination(&self) -> Option<AuditDestination<'_>> {
        match (&self.stdout, &self.syslog, &self.webhook) {
            (Some(_), None, None) => Some(AuditDestination::Stdout),
            (None, Some(syslog), None) => Some(AuditDestination::Syslog(syslog)),
            (None, None, Some(webhook)) => Some(AuditDestination::Webhook(webhook)),
            _ => None,
        }
    }
}

/// A sink's destination, as code wants to match on it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AuditDestination<'a> {
    Stdout,
    Syslog(&'a SyslogSink),
    Webhook(&'a WebhookSink),
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_names_group_version_short_name_and_category() {
        let crd = HealthcareTenant::crd();
        assert_eq!(crd.spec.group, "bedside.health");
        assert_eq!(crd.spec.names.kind, "HealthcareTenant");
        assert_eq!(crd.spec.names.short_names, Some(vec!["hct".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["bedside".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
        assert!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }

    #[test]
    fn printer_columns_show_ready_baa_nodes_compliance_and_age() {
        let crd = HealthcareTenant::crd();
        let columns: Vec<&str> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Ready", "BAA", "Nodes", "Compliant", "Failing", "Age"]
        );
    }

    #[test]
    fn omitted_meeting_settings_default_to_the_locked_values() {
        let meetings: MeetingPolicy =
            serde_json::from_value(serde_json::json!({})).expect("defaults");
        assert_eq!(meetings, MeetingPolicy::default());
        assert_eq!(meetings.idle_timeout, policy::MAX_IDLE_TIMEOUT);
        assert_eq!(meetings.recording, RecordingPolicy::Disabled);
    }

    #[test]
    fn an_unlocked_setting_cannot_even_be_deserialized() {
        let unlocked = serde_json::json!({"recording": "Enabled"});
        assert!(serde_json::from_value::<MeetingPolicy>(unlocked).is_err());
    }

    #[test]
    fn conditions_merge_by_type_under_server_side_apply() {
        let crd = serde_json::to_value(HealthcareTenant::crd()).expect("json");
        let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }

    #[test]
    fn sink_destination_names_the_one_configured_target() {
        let sink = AuditSink {
            stdout: None,
            syslog: None,
            webhook: Some(WebhookSink {
                url: "https://siem.example/ingest".into(),
                token_secret: "siem-token".into(),
            }),
        };
        assert!(matches!(
            sink.destination(),
            Some(AuditDestination::Webhook(_))
        ));
    }
}
