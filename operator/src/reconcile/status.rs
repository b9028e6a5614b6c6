//! The tenant's status, computed from what the reconcile observed and did. Pure: a test feeds it
//! facts and a clock.

use bedside_crds::tenant::ConditionType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::baa::BaaState;

/// A media node's (or the operator's own) `/audit/health`: the audit crate's one type.
pub use bedside_audit::delivery::health::AuditHealthReport as AuditHealth;
use bedside_audit::delivery::health::SinkState;

/// Who reported on the sinks: a media node's pod, or the operator's own delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReport {
    pub reporter: String,
    /// The report, or why it could not be had.
    pub health: Result<AuditHealth, String>,
}

/// Why a condition has its status, CamelCase as Kubernetes conventions want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    AgreementInForce,
    AgreementNotYetInForce,
    AgreementExpired,
    LockedSettingsApplied,
    DriftReverted,
    InvalidSpec,
    TenantSecretFound,
    TenantSecretMissing,
    CertManagerNotInstalled,
    CertificateIssued,
    CertificateNotReady,
    SinksNotYetReported,
    SinksDelivering,
    SinkDown,
    MediaNodesReady,
    MediaNodesStarting,
    MediaNodesUnaddressed,
    MediaStopped,
    NotReady,
    /// RBAC does not let the operator write in the tenant's namespace.
    NotPermitted,
    RelayNotReady,
    ControlsPassing,
    ControlsFailing,
    NotEvaluated,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AgreementInForce => "AgreementInForce",
            Reason::AgreementNotYetInForce => "AgreementNotYetInForce",
            Reason::AgreementExpired => "AgreementExpired",
            Reason::LockedSettingsApplied => "LockedSettingsApplied",
            Reason::DriftReverted => "DriftReverted",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::TenantSecretFound => "TenantSecretFound",
            Reason::TenantSecretMissing => "TenantSecretMissing",
            Reason::CertManagerNotInstalled => "CertManagerNotInstalled",
            Reason::CertificateIssued => "CertificateIssued",
            Reason::CertificateNotReady => "CertificateNotReady",
            Reason::SinksNotYetReported => "SinksNotYetReported",
            Reason::SinksDelivering => "SinksDelivering",
            Reason::SinkDown => "SinkDown",
            Reason::MediaNodesReady => "MediaNodesReady",
            Reason::MediaNodesStarting => "MediaNodesStarting",
            Reason::MediaNodesUnaddressed => "MediaNodesUnaddressed",
            Reason::MediaStopped => "MediaStopped",
            Reason::NotReady => "NotReady",
            Reason::NotPermitted => "NotPermitted",
            Reason::RelayNotReady => "RelayNotReady",
            Reason::ControlsPassing => "ControlsPassing",
            Reason::ControlsFailing => "ControlsFailing",
            Reason::NotEvaluated => "NotEvaluated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateState {
    TenantSecret {
        name: String,
        exists: bool,
    },
    /// `tls.issuerRef` on a cluster without cert-manager's API.
    CertManagerMissing,
    /// `tls.issuerRef`: the Certificate's own Ready condition.
    Certificate {
        name: String,
        ready: bool,
        message: String,
    },
}

/// What one reconcile saw and did.
#[derive(Debug, Clone)]
pub struct Observed {
    pub generation: Option<i64>,
    pub baa: BaaState,
    pub spec_violations: Vec<String>,
    pub drift_reverted: Vec<String>,
    pub certificate: CertificateState,
    pub ready_media_nodes: i32,
    /// How many media pods the tenant should run now.
    pub media_replicas: i32,
    /// Why media pods have no advertised address, one sentence each.
    pub unaddressed: Vec<String>,
    /// The signaling URL browsers use, once the signaling Service exists.
    pub endpoint: Option<String>,
    /// The media nodes' reports on the audit sinks, then the operator's own.
    pub sinks: Vec<SinkReport>,
    /// What to grant, when RBAC does not let the operator write in the tenant's namespace.
    pub not_permitted: Option<String>,
    /// The TURN relay, for a tenant with `spec.relay`.
    pub relay: Option<RelayState>,
    /// What the media pods answered on `/evidence`.
    pub nodes: Vec<super::evidence::NodeReport>,
    /// The end of the certificate signaling serves, once its Secret exists.
    pub certificate_expiry: Option<Result<jiff::Timestamp, String>>,
    /// What the reconcile built and applied, for the evidence: the node config, the media
    /// pods' spec; none when it applied nothing (an invalid spec).
    pub built: Option<Built>,
    /// The compliance findings, once evaluated.
    pub compliance: Option<Vec<super::evidence::Finding>>,
    /// The compliance Report's name, once written (none where openreports.io is not served).
    pub compliance_report: Option<String>,
}

/// What a reconcile built and applied (its NetworkPolicy among them), as the evidence reads it.
#[derive(Debug, Clone)]
pub struct Built {
    pub config: Option<bedside_crds::node_config::MediaNodeConfig>,
    pub media_pod: Option<k8s_openapi::api::core::v1::PodSpec>,
}

/// What the reconcile saw of the tenant's relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayState {
    /// Its load balancer's address (what the relay hostname must resolve to).
    pub address: Option<String>,
    pub ready_pods: i32,
}

/// Why the relay cannot serve yet, if it cannot.
fn relay_problem(relay: &RelayState) -> Option<String> {
    if relay.ready_pods == 0 {
        Some(
            "the TURN relay has no ready pod running its current configuration yet (kubectl rollout status deployment of the relay)".into(),
        )
    } else if relay.address.is_none() {
        Some("the TURN relay's Service has no load balancer address yet".into())
    } else {
        None
    }
}

/// The signaling URL browsers use: the tenant's first DNS name, with the signaling Service's
/// node port when the tenant is exposed on node ports (a load balancer listens on 443).
pub fn endpoint(
    tenant: &bedside_crds::HealthcareTenant,
    services: &[k8s_openapi::api::core::v1::Service],
) -> Option<String> {
    let host = tenant.spec.tls.dns_names.first()?;
    match tenant.spec.media_nodes.service_type {
        bedside_crds::tenant::MediaServiceType::LoadBalancer => Some(format!("wss://{host}")),
        bedside_crds::tenant::MediaServiceType::NodePort => {
            let signaling = crate::names::ChildNames::of(tenant).signaling;
            let port = services
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(signaling.as_str()))?
                .spec
                .as_ref()?
                .ports
                .as_ref()?
                .first()?
                .node_port?;
            Some(format!("wss://{host}:{port}"))
        }
    }
}

struct Verdict {
    type_: ConditionType,
    ok: Option<bool>,
    reason: Reason,
    message: String,
}

fn verdicts(o: &Observed) -> Vec<Verdict> {
    let certificate = certificate_verdict(&o.certificate);
    [
        (
            ConditionType::Ready,
            ready_verdict(o, certificate.0 == Some(true)),
        ),
        (ConditionType::BaaActive, baa_verdict(o)),
        (ConditionType::SettingsLocked, locked_verdict(o)),
        (ConditionType::CertificateReady, certificate),
        (ConditionType::AuditSinksReady, sinks_verdict(&o.sinks)),
        (ConditionType::Compliant, compliance_verdict(o)),
    ]
    .into_iter()
    .map(|(type_, (ok, reason, message))| Verdict {
        type_,
        ok,
        reason,
        message,
    })
    .collect()
}

/// Ready: media allowed, a certificate to serve, every pod addressed, at least one pod Ready.
fn ready_verdict(o: &Observed, certificate_served: bool) -> (Option<bool>, Reason, String) {
    let media_allowed = o.baa.is_active() && o.spec_violations.is_empty();
    if let Some(grant) = &o.not_permitted {
        (Some(false), Reason::NotPermitted, grant.clone())
    } else if !media_allowed {
        (
            Some(false),
            Reason::MediaStopped,
            "media nodes are stopped (see BAAActive and SettingsLocked)".to_string(),
        )
    } else if !certificate_served {
        (
            Some(false),
            Reason::NotReady,
            "no certificate to serve signaling with (see CertificateReady)".into(),
        )
    } else if let Some(why) = o.relay.as_ref().and_then(relay_problem) {
        (Some(false), Reason::RelayNotReady, why)
    } else if !o.unaddressed.is_empty() {
        (
            Some(false),
            Reason::MediaNodesUnaddressed,
            format!(
                "{} of {} media node(s) have no address browsers can reach: {}",
                o.unaddressed.len(),
                o.media_replicas,
                o.unaddressed.join("; ")
            ),
        )
    } else if o.ready_media_nodes > 0 {
        (
            Some(true),
            Reason::MediaNodesReady,
            format!("{} media node(s) ready", o.ready_media_nodes),
        )
    } else {
        (
            Some(false),
            Reason::MediaNodesStarting,
            "no media node is ready yet".into(),
        )
    }
}

/// BAAActive: whether the agreement is in force today.
fn baa_verdict(o: &Observed) -> (Option<bool>, Reason, String) {
    match o.baa {
        BaaState::Active {
            expires_on: Some(d),
        } => (
            Some(true),
            Reason::AgreementInForce,
            format!("the Business Associate Agreement is in force through {d}"),
        ),
        BaaState::Active { expires_on: None } => (
            Some(true),
            Reason::AgreementInForce,
            "the Business Associate Agreement is in force with no end date".into(),
        ),
        BaaState::NotYetInForce { signed_on } => (
            Some(false),
            Reason::AgreementNotYetInForce,
            format!(
                "the Business Associate Agreement takes effect on {signed_on} (UTC); media nodes are stopped until then"
            ),
        ),
        BaaState::Expired { expired_on } => (
            Some(false),
            Reason::AgreementExpired,
            format!(
                "the Business Associate Agreement expired after {expired_on}; media nodes are stopped: sign a new agreement and update spec.baa"
            ),
        ),
    }
}

/// SettingsLocked: an invalid spec first, then drift taken back, else the locks hold.
fn locked_verdict(o: &Observed) -> (Option<bool>, Reason, String) {
    if !o.spec_violations.is_empty() {
        (
            Some(false),
            Reason::InvalidSpec,
            format!(
                "the spec breaks the CRD's rules, so nothing was changed: {}",
                o.spec_violations.join("; ")
            ),
        )
    } else if !o.drift_reverted.is_empty() {
        (
            Some(true),
            Reason::DriftReverted,
            format!("reverted: {}", o.drift_reverted.join("; ")),
        )
    } else {
        (
            Some(true),
            Reason::LockedSettingsApplied,
            "every child object carries the locked settings".into(),
        )
    }
}

/// Compliant: no software check fails (warnings and manual items are in the report).
fn compliance_verdict(o: &Observed) -> (Option<bool>, Reason, String) {
    use super::evidence::{Outcome, summarize};
    let Some(findings) = &o.compliance else {
        return (
            None,
            Reason::NotEvaluated,
            "the controls have not been evaluated yet".into(),
        );
    };
    let s = summarize(findings);
    let failing: Vec<String> = findings
        .iter()
        .filter(|f| f.outcome == Outcome::Fail)
        .map(|f| format!("{} {}: {}", f.control, f.check, f.message))
        .collect();
    if failing.is_empty() {
        let message = format!(
            "{} checks pass, {} warn, {} not checked; {} manual item(s) for people to keep",
            s.pass, s.warn, s.not_checked, s.manual
        );
        (Some(true), Reason::ControlsPassing, message)
    } else {
        (Some(false), Reason::ControlsFailing, failing.join("; "))
    }
}

/// CertificateReady: the certificate signaling serves, from the tenant's Secret or cert-manager.
pub(super) fn certificate_verdict(
    certificate: &CertificateState,
) -> (Option<bool>, Reason, String) {
    match certificate {
        CertificateState::TenantSecret { name, exists: true } => (Some(true), Reason::TenantSecretFound, format!("serving the certificate in Secret {name}")),
        CertificateState::TenantSecret { name, exists: false } => (Some(false), Reason::TenantSecretMissing, format!("Secret {name} (type kubernetes.io/tls) does not exist in the tenant's namespace; create it or use tls.issuerRef")),
        CertificateState::CertManagerMissing => (Some(false), Reason::CertManagerNotInstalled, "tls.issuerRef needs cert-manager, whose API (cert-manager.io/v1) this cluster does not serve; install cert-manager and restart the operator, or use tls.secretName".into()),
        CertificateState::Certificate { name, ready: true, .. } => (Some(true), Reason::CertificateIssued, format!("cert-manager issued Certificate {name}")),
        CertificateState::Certificate { name, ready: false, message } => (Some(false), Reason::CertificateNotReady, format!("Certificate {name} is not ready yet: {message}")),
    }
}

/// AuditSinksReady: every reporter delivers to every sink; otherwise which one does not, why,
/// and how much waits. A node that refuses joins for a full buffer is named first.
pub(super) fn sinks_verdict(reports: &[SinkReport]) -> (Option<bool>, Reason, String) {
    let mut problems = Vec::new();
    let mut delivering = 0;
    let mut unreachable = Vec::new();
    for report in reports {
        let health = match &report.health {
            Ok(h) => h,
            Err(why) => {
                unreachable.push(format!("{}: {why}", report.reporter));
                continue;
            }
        };
        if health.refusing_joins {
            problems.insert(
                0,
                format!(
                    "{} refuses joins: its audit buffer is full (spec.audit.whenBufferFull)",
                    report.reporter
                ),
            );
        }
        let mut ok = true;
        for sink in health.sinks.iter().filter(|s| s.state == SinkState::Down) {
            ok = false;
            problems.push(format!(
                "{}: sink {} ({}) is down ({}), {} KiB buffered",
                report.reporter,
                sink.sink,
                sink.kind,
                sink.reason.as_deref().unwrap_or("failing"),
                sink.buffered_bytes.div_ceil(1024)
            ));
        }
        if ok && !health.refusing_joins {
            delivering += 1;
        }
    }
    if !problems.is_empty() {
        return (Some(false), Reason::SinkDown, problems.join("; "));
    }
    if delivering == 0 {
        let why = if unreachable.is_empty() {
            "no media node has reported on its audit sinks yet".to_string()
        } else {
            format!("no report on the audit sinks: {}", unreachable.join("; "))
        };
        return (None, Reason::SinksNotYetReported, why);
    }
    let mut message = format!("{delivering} reporter(s) deliver to every audit sink");
    if !unreachable.is_empty() {
        message.push_str(&format!("; not reporting: {}", unreachable.join("; ")));
    }
    (Some(true), Reason::SinksDelivering, message)
}

/// The conditions for `observed`, keeping each one's lastTransitionTime while its status holds.
///
/// A reverted drift stays reported in SettingsLocked until the spec changes: the reconcile
/// right after the revert finds nothing to revert, and an administrator must still see that
/// someone tampered with the tenant's objects.
pub fn conditions(observed: &Observed, previous: &[Condition], now: Time) -> Vec<Condition> {
    verdicts(observed)
        .into_iter()
        .map(|mut v| {
            if v.reason == Reason::LockedSettingsApplied
                && let Some(before) = previous.iter().find(|c| c.type_ == v.type_.as_str())
                && before.reason == Reason::DriftReverted.as_str()
                && before.observed_generation == observed.generation
            {
                v.reason = Reason::DriftReverted;
                v.message = before.message.clone();
            }
            v
        })
        .map(|v| {
            let status = match v.ok {
                Some(true) => "True",
                Some(false) => "False",
                None => "Unknown",
            };
            let before = previous.iter().find(|c| c.type_ == v.type_.as_str());
            let last_transition_time = match before {
                Some(c) if c.status == status => c.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: v.type_.as_str().into(),
                status: status.into(),
                reason: v.reason.as_str().into(),
                message: v.message,
                last_transition_time,
                observed_generation: observed.generation,
            }
        })
        .collect()
}

/// Conditions whose status or reason changed: each becomes a Kubernetes Event.
pub fn transitions<'a>(previous: &[Condition], current: &'a [Condition]) -> Vec<&'a Condition> {
    current
        .iter()
        .filter(|c| {
            !previous
                .iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed() -> Observed {
        Observed {
            generation: Some(3),
            baa: BaaState::Active { expires_on: None },
            spec_violations: vec![],
            drift_reverted: vec![],
            certificate: CertificateState::TenantSecret {
                name: "t-tls".into(),
                exists: true,
            },
            ready_media_nodes: 2,
            media_replicas: 2,
            unaddressed: Vec::new(),
            endpoint: None,
            sinks: vec![],
            not_permitted: None,
            relay: None,
            nodes: Vec::new(),
            certificate_expiry: None,
            built: None,
            compliance: None,
            compliance_report: None,
        }
    }

    fn report(reporter: &str, sinks: &[(&str, Option<&str>)], refusing: bool) -> SinkReport {
        SinkReport {
            reporter: reporter.into(),
            health: Ok(AuditHealth {
                sinks: sinks
                    .iter()
                    .enumerate()
                    .map(
                        |(i, (state, reason))| bedside_audit::delivery::health::SinkReport {
                            sink: i + 1,
                            kind: "syslog".into(),
                            state: serde_json::from_value((*state).into()).expect("a sink state"),
                            reason: reason.map(|r| r.to_string().into()),
                            buffered_bytes: 4096,
                        },
                    )
                    .collect(),
                buffer_full: refusing,
                refusing_joins: refusing,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn audit_sinks_ready_follows_what_the_nodes_report() {
        let at = time("2026-11-23T10:00:00Z");
        let mut o = observed();
        o.sinks = vec![
            report("media-a", &[("up", None)], false),
            report("operator", &[("unknown", None)], false),
        ];
        let c = conditions(&o, &[], at.clone());
        assert_eq!(get(&c, "AuditSinksReady").status, "True");
        assert_eq!(get(&c, "AuditSinksReady").reason, "SinksDelivering");

        o.sinks = vec![
            report("media-a", &[("up", None)], false),
            report("media-b", &[("down", Some("unauthorized"))], true),
            SinkReport {
                reporter: "media-c".into(),
                health: Err("connection refused".into()),
            },
        ];
        let c = conditions(&o, &[], at.clone());
        let sinks = get(&c, "AuditSinksReady");
        assert_eq!(
            (sinks.status.as_str(), sinks.reason.as_str()),
            ("False", "SinkDown")
        );
        assert!(
            sinks.message.starts_with("media-b refuses joins"),
            "{}",
            sinks.message
        );
        assert!(
            sinks
                .message
                .contains("media-b: sink 1 (syslog) is down (unauthorized), 4 KiB buffered"),
            "{}",
            sinks.message
        );

        o.sinks = vec![SinkReport {
            reporter: "media-c".into(),
            health: Err("connection refused".into()),
        }];
        let c = conditions(&o, &[], at);
        let sinks = get(&c, "AuditSinksReady");
        assert_eq!(sinks.status, "Unknown");
        assert!(
            sinks.message.contains("media-c: connection refused"),
            "{}",
            sinks.message
        );
    }

    fn time(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    fn get<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition")
    }

    #[test]
    fn a_healthy_tenant_is_ready_with_every_condition_set() {
        let c = conditions(&observed(), &[], time("2026-11-23T10:00:00Z"));
        assert_eq!(c.len(), 6);
        assert_eq!(get(&c, "Ready").status, "True");
        assert_eq!(get(&c, "Ready").observed_generation, Some(3));
        assert_eq!(get(&c, "AuditSinksReady").status, "Unknown");
        assert_eq!(get(&c, "Compliant").status, "Unknown");
    }

    #[test]
    fn compliant_is_false_naming_each_failing_check_and_true_with_warnings() {
        use crate::reconcile::evidence::{Finding, Outcome, Severity};
        let finding = |check, outcome| Finding {
            control: "164.312(b)",
            title: "Audit controls",
            check,
            outcome,
            severity: Severity::Critical,
            message: format!("{check} says why"),
            objects: Vec::new(),
        };
        let mut o = observed();
        o.compliance = Some(vec![
            finding("sinks-delivering", Outcome::Fail),
            finding("buffers-below-limit", Outcome::Warn),
            finding("agreement-signed", Outcome::Manual),
        ]);
        let c = conditions(&o, &[], time("2026-11-23T10:00:00Z"));
        let compliant = get(&c, "Compliant");
        assert_eq!(
            (compliant.status.as_str(), compliant.reason.as_str()),
            ("False", "ControlsFailing")
        );
        assert_eq!(
            compliant.message,
            "164.312(b) sinks-delivering: sinks-delivering says why"
        );
        o.compliance = Some(vec![
            finding("buffers-below-limit", Outcome::Warn),
            finding("agreement-signed", Outcome::Manual),
        ]);
        let c = conditions(&o, &[], time("2026-11-23T10:00:00Z"));
        let compliant = get(&c, "Compliant");
        assert_eq!(compliant.status, "True");
        assert!(
            compliant.message.contains("1 warn") && compliant.message.contains("1 manual"),
            "{}",
            compliant.message
        );
    }

    #[test]
    fn an_expired_agreement_stops_media_and_says_when() {
        let mut o = observed();
        o.baa = BaaState::Expired {
            expired_on: "2026-01-14".parse().expect("date"),
        };
        let c = conditions(&o, &[], time("2026-11-23T10:00:00Z"));
        assert_eq!(get(&c, "BAAActive").status, "False");
        assert_eq!(get(&c, "BAAActive").reason, "AgreementExpired");
        assert!(get(&c, "BAAActive").message.contains("2026-01-14"));
        assert_eq!(get(&c, "Ready").reason, "MediaStopped");
    }

    #[test]
    fn transition_times_hold_while_status_holds_and_events_follow_changes() {
        let first = conditions(&observed(), &[], time("2026-11-23T10:00:00Z"));
        let same = conditions(&observed(), &first, time("2026-11-23T11:00:00Z"));
        assert_eq!(
            get(&same, "Ready").last_transition_time,
            time("2026-11-23T10:00:00Z")
        );
        assert!(transitions(&first, &same).is_empty());

        let mut o = observed();
        o.ready_media_nodes = 0;
        let later = conditions(&o, &same, time("2026-11-23T12:00:00Z"));
        assert_eq!(
            get(&later, "Ready").last_transition_time,
            time("2026-11-23T12:00:00Z")
        );
        let changed: Vec<&str> = transitions(&same, &later)
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(changed, ["Ready"]);
    }

    #[test]
    fn the_endpoint_carries_the_signaling_node_port_only_for_node_port_tenants() {
        let mut mercy = crate::build::objects_tests_tenant("mercy-clinic.yaml");
        let signaling: k8s_openapi::api::core::v1::Service = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "mercy-clinic-signaling"}, "spec": {"ports": [{"port": 443, "nodePort": 31443}]}}),
        )
        .expect("service");
        let services = [signaling];
        assert_eq!(
            endpoint(&mercy, &services).as_deref(),
            Some("wss://meet.mercy.example")
        );
        mercy.spec.media_nodes.service_type = bedside_crds::tenant::MediaServiceType::NodePort;
        assert_eq!(
            endpoint(&mercy, &services).as_deref(),
            Some("wss://meet.mercy.example:31443")
        );
        assert_eq!(
            endpoint(&mercy, &[]),
            None,
            "no signaling Service, no endpoint yet"
        );
    }

    #[test]
    fn pods_without_a_reachable_address_keep_the_tenant_from_ready_and_say_why() {
        let mut o = observed();
        o.unaddressed = vec!["serviceType NodePort needs spec.mediaNodes.publicAddress".into()];
        let ready = get(&conditions(&o, &[], time("2026-11-23T10:00:00Z")), "Ready").clone();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "MediaNodesUnaddressed");
        assert!(
            ready.message.contains("1 of 2 media node(s)"),
            "{}",
            ready.message
        );
        assert!(ready.message.contains("publicAddress"), "{}", ready.message);
    }

    #[test]
    fn reverted_drift_stays_reported_until_the_spec_changes() {
        let mut o = observed();
        o.drift_reverted = vec!["Service x: was deleted; recreated".into()];
        let reverted = conditions(&o, &[], time("2026-11-23T10:00:00Z"));
        o.drift_reverted.clear();
        let next = conditions(&o, &reverted, time("2026-11-23T10:00:01Z"));
        assert_eq!(get(&next, "SettingsLocked").reason, "DriftReverted");
        o.generation = Some(4);
        let after_edit = conditions(&o, &next, time("2026-11-23T11:00:00Z"));
        assert_eq!(
            get(&after_edit, "SettingsLocked").reason,
            "LockedSettingsApplied"
        );
    }

    #[test]
    fn reverted_drift_is_reported_in_settings_locked() {
        let mut o = observed();
        o.drift_reverted = vec!["ConfigMap x: meetings.recording: is Enabled; reverted".into()];
        let c = conditions(&o, &[], time("2026-11-23T10:00:00Z"));
        assert_eq!(get(&c, "SettingsLocked").reason, "DriftReverted");
        assert!(
            get(&c, "SettingsLocked")
                .message
                .contains("meetings.recording")
        );
    }
}
