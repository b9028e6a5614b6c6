//! The tenant's live compliance evidence: one result per HIPAA Security Rule control and check,
//! from what a reconcile saw and what each media node reports of itself (`/evidence`). Pure:
//! a test feeds it facts and a clock. The reconcile writes the findings as an OpenReports
//! `Report` (report.rs) and sums them up in the tenant's status (the Compliant condition).
//!
//! bedside produces evidence; it is not an auditor. What no software can check (the risk
//! analysis, workforce training, the signed agreement itself) is listed as manual, with what
//! to do, and never counted as passed.

use bedside_audit::evidence::NodeEvidence;
use bedside_crds::node_config::MediaNodeConfig;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::PodSpec;

use super::status::{self, CertificateState, Observed, SinkReport};
use crate::baa::BaaState;

/// A certificate this close to its end is reported (warn) so it is renewed in time.
pub const CERTIFICATE_WARNING: SignedDuration = SignedDuration::from_hours(14 * 24);
/// A node's check of its chain older than this is not recent evidence.
pub const CHAIN_CHECK_STALE: SignedDuration = SignedDuration::from_mins(10);
/// The one SRTP profile a BAA-locked node may complete a session with.
const REQUIRED_SRTP: &str = "AEAD_AES_256_GCM";

/// What one media pod answered on `/evidence`, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub pod: String,
    pub evidence: Result<NodeEvidence, String>,
}

/// What the findings are drawn from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub now: Timestamp,
    pub baa: BaaState,
    /// The node config rendered for the tenant this reconcile (none for an invalid spec).
    pub rendered: Option<&'a MediaNodeConfig>,
    /// The media pods' spec as applied (drift is reverted to it).
    pub media_pod: Option<&'a PodSpec>,
    /// The media nodes' NetworkPolicy was applied.
    pub network_policy: bool,
    /// Locked settings someone weakened, reverted by this reconcile.
    pub drift_reverted: &'a [String],
    pub certificate: &'a CertificateState,
    /// The served certificate's end, read from its Secret (none while the Secret is missing).
    pub certificate_expiry: Option<&'a Result<Timestamp, String>>,
    pub sinks: &'a [SinkReport],
    pub nodes: &'a [NodeReport],
    /// Media pods the tenant should run now (none while the BAA is not in force).
    pub media_replicas: i32,
    /// Names of the objects findings point at.
    pub objects: &'a Objects,
}

impl<'a> Facts<'a> {
    /// The facts a reconcile gathered in `o`.
    pub fn of(o: &'a Observed, objects: &'a Objects, now: Timestamp) -> Self {
        let built = o.built.as_ref();
        Facts {
            now,
            baa: o.baa,
            rendered: built.and_then(|b| b.config.as_ref()),
            media_pod: built.and_then(|b| b.media_pod.as_ref()),
            network_policy: built.is_some(),
            drift_reverted: &o.drift_reverted,
            certificate: &o.certificate,
            certificate_expiry: o.certificate_expiry.as_ref(),
            sinks: &o.sinks,
            nodes: &o.nodes,
            media_replicas: o.media_replicas,
            objects,
        }
    }
}

/// The tenant's objects by name, for the findings' references.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub tenant: String,
    pub config_map: String,
    pub media_nodes: String,
    pub network_policy: String,
    pub tls_secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
    /// Nothing to check now (media stopped): neither passed nor failed.
    NotChecked,
    /// No software can check it: a person must, as the message says.
    Manual,
}

impl Outcome {
    /// The OpenReports `result`: manual and unchecked items are `skip`, never `pass`.
    pub fn as_report_result(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Warn => "warn",
            Outcome::Fail => "fail",
            Outcome::NotChecked | Outcome::Manual => "skip",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    High,
    Medium,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Info => "info",
        }
    }
}

/// One check of one control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The standard or specification, e.g. `164.312(b)`.
    pub control: &'static str,
    /// Its name in the Security Rule.
    pub title: &'static str,
    /// What was checked, kebab-case.
    pub check: &'static str,
    pub outcome: Outcome,
    pub severity: Severity,
    /// What was found, and what to do when it is not a pass.
    pub message: String,
    /// The objects checked: (kind, name).
    pub objects: Vec<(&'static str, String)>,
}

/// How many findings came out each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub pass: u32,
    pub warn: u32,
    pub fail: u32,
    pub not_checked: u32,
    pub manual: u32,
}

pub fn summarize(findings: &[Finding]) -> Summary {
    let mut s = Summary::default();
    for f in findings {
        *match f.outcome {
            Outcome::Pass => &mut s.pass,
            Outcome::Warn => &mut s.warn,
            Outcome::Fail => &mut s.fail,
            Outcome::NotChecked => &mut s.not_checked,
            Outcome::Manual => &mut s.manual,
        } += 1;
    }
    s
}

/// Every finding, software checks first, then the manual items.
pub fn evaluate(f: &Facts) -> Vec<Finding> {
    let mut findings = vec![agreement(f), network_policy(f), pod_security(f), locked(f)];
    findings.extend([
        logoff_rendered(f),
        logoff_in_force(f),
        encryption_rendered(f),
        srtp_sessions(f),
        authentication(f),
        sinks_delivering(f),
        buffers(f),
        chain_at_rest(f),
        certificate(f),
    ]);
    findings.extend(manual());
    findings
}

fn finding(
    (control, title): (&'static str, &'static str),
    check: &'static str,
    (outcome, severity): (Outcome, Severity),
    message: String,
    objects: Vec<(&'static str, String)>,
) -> Finding {
    Finding {
        control,
        title,
        check,
        outcome,
        severity,
        message,
        objects,
    }
}

const BAA: (&str, &str) = ("164.308(b)(1)", "Business associate contracts");
const ACCESS: (&str, &str) = ("164.312(a)(1)", "Access control");
const LOGOFF: (&str, &str) = ("164.312(a)(2)(iii)", "Automatic logoff");
const ENCRYPTION: (&str, &str) = ("164.312(a)(2)(iv)", "Encryption and decryption");
const AUDIT: (&str, &str) = ("164.312(b)", "Audit controls");
const INTEGRITY: (&str, &str) = ("164.312(c)(1)", "Integrity");
const AUTHENTICATION: (&str, &str) = ("164.312(d)", "Person or entity authentication");
const TRANSMISSION: (&str, &str) = ("164.312(e)(1)", "Transmission security");

fn tenant(f: &Facts) -> Vec<(&'static str, String)> {
    vec![("HealthcareTenant", f.objects.tenant.clone())]
}

fn agreement(f: &Facts) -> Finding {
    let (outcome, message) = match f.baa {
        BaaState::Active { expires_on: None } => (
            Outcome::Pass,
            "the BAA is in force (spec.baa) with no end date".to_string(),
        ),
        BaaState::Active {
            expires_on: Some(d),
        } => (
            Outcome::Pass,
            format!("the BAA is in force until {d} (spec.baa)"),
        ),
        BaaState::NotYetInForce { signed_on } => (
            Outcome::Fail,
            format!("the BAA takes effect on {signed_on}; media stays stopped until then"),
        ),
        BaaState::Expired { expired_on } => (
            Outcome::Fail,
            format!(
                "the BAA expired on {expired_on}; media is stopped: renew the agreement and update spec.baa.expiresOn"
            ),
        ),
    };
    finding(
        BAA,
        "agreement-in-force",
        (outcome, Severity::Critical),
        message,
        tenant(f),
    )
}

fn network_policy(f: &Facts) -> Finding {
    let objects = vec![("NetworkPolicy", f.objects.network_policy.clone())];
    let (outcome, message) = if f.network_policy {
        (Outcome::Pass, "the media pods' NetworkPolicy is applied: signaling, media and metrics in, audit sinks and DNS out".to_string())
    } else {
        (Outcome::Fail, "the media pods' NetworkPolicy is not applied: see the operator's log and the tenant's events".to_string())
    };
    finding(
        ACCESS,
        "network-policy",
        (outcome, Severity::High),
        message,
        objects,
    )
}

/// What Pod Security `restricted` asks of the media pods that their spec lacks.
fn restricted_gaps(pod: &PodSpec) -> Vec<String> {
    let mut gaps = Vec::new();
    let ps = pod.security_context.as_ref();
    if ps.and_then(|s| s.run_as_non_root) != Some(true) {
        gaps.push("runAsNonRoot".to_string());
    }
    let seccomp = |t: Option<&str>| t == Some("RuntimeDefault") || t == Some("Localhost");
    let pod_seccomp = ps
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    for c in &pod.containers {
        let sc = c.security_context.as_ref();
        if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            gaps.push(format!("{}: allowPrivilegeEscalation false", c.name));
        }
        if sc.and_then(|s| s.read_only_root_filesystem) != Some(true) {
            gaps.push(format!("{}: readOnlyRootFilesystem", c.name));
        }
        let drops_all = sc
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|caps| caps.drop.as_ref())
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        if !drops_all {
            gaps.push(format!("{}: capabilities drop ALL", c.name));
        }
        let own = sc
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str());
        if !seccomp(own.or(pod_seccomp)) {
            gaps.push(format!("{}: seccompProfile RuntimeDefault", c.name));
        }
    }
    gaps
}

fn pod_security(f: &Facts) -> Finding {
    let objects = vec![("StatefulSet", f.objects.media_nodes.clone())];
    let (outcome, message) = match f.media_pod.map(restricted_gaps) {
        None => (Outcome::NotChecked, "no media pods are built for this spec (see the InvalidSpec event)".to_string()),
        Some(gaps) if gaps.is_empty() => (Outcome::Pass, "the media pods run under Pod Security restricted: non-root, no privilege escalation, read-only root filesystem, all capabilities dropped, seccomp RuntimeDefault".to_string()),
        Some(gaps) => (Outcome::Fail, format!("the media pods lack what Pod Security restricted asks: {}; this is a bug in bedside-operator, report it", gaps.join(", "))),
    };
    finding(
        ACCESS,
        "pod-security-restricted",
        (outcome, Severity::High),
        message,
        objects,
    )
}

fn locked(f: &Facts) -> Finding {
    let objects = vec![
        ("StatefulSet", f.objects.media_nodes.clone()),
        ("ConfigMap", f.objects.config_map.clone()),
    ];
    let (outcome, message) = if f.drift_reverted.is_empty() {
        (
            Outcome::Pass,
            "every owned object carries the locked settings".to_string(),
        )
    } else {
        (
            Outcome::Warn,
            format!(
                "someone weakened a locked setting and the operator reverted it: {}; find who in the API server's audit log",
                f.drift_reverted.join("; ")
            ),
        )
    };
    finding(
        ACCESS,
        "locked-settings",
        (outcome, Severity::High),
        message,
        objects,
    )
}

fn config_map(f: &Facts) -> Vec<(&'static str, String)> {
    vec![("ConfigMap", f.objects.config_map.clone())]
}

fn idle_timeout(config: &MediaNodeConfig) -> std::time::Duration {
    config.meetings.idle_timeout.into()
}

fn logoff_rendered(f: &Facts) -> Finding {
    let (outcome, message) = match f.rendered {
        None => (
            Outcome::NotChecked,
            "no node config is rendered for this spec (see the InvalidSpec event)".to_string(),
        ),
        Some(config) => {
            let idle = idle_timeout(config);
            let ok = (bedside_crds::policy::MIN_IDLE_TIMEOUT
                ..=bedside_crds::policy::MAX_IDLE_TIMEOUT)
                .contains(&idle);
            let words = format!("{} s", idle.as_secs());
            if ok {
                (
                    Outcome::Pass,
                    format!("the node config ends an idle session after {words}"),
                )
            } else {
                (
                    Outcome::Fail,
                    format!(
                        "the node config's idle timeout is {words}, outside 1m to 15m: set spec.meetings.idleTimeout"
                    ),
                )
            }
        }
    };
    finding(
        LOGOFF,
        "idle-timeout-rendered",
        (outcome, Severity::High),
        message,
        config_map(f),
    )
}

/// Runs `check` on every node's evidence: a node that did not answer is a warning, media
/// stopped is nothing to check.
fn per_node(
    f: &Facts,
    check: impl Fn(&NodeEvidence) -> Result<(), String>,
    all_well: &str,
) -> (Outcome, String) {
    if f.media_replicas == 0 {
        return (
            Outcome::NotChecked,
            "media is stopped: no media node to ask".into(),
        );
    }
    if f.nodes.is_empty() {
        return (Outcome::Warn, "no media pod is running to ask yet".into());
    }
    let mut failed = Vec::new();
    let mut silent = Vec::new();
    for node in f.nodes {
        match &node.evidence {
            Ok(evidence) => {
                if let Err(why) = check(evidence) {
                    failed.push(format!("{}: {why}", node.pod));
                }
            }
            Err(why) => silent.push(format!("{}: {why}", node.pod)),
        }
    }
    match (failed.is_empty(), silent.is_empty()) {
        (false, _) => (Outcome::Fail, failed.join("; ")),
        (true, false) => (
            Outcome::Warn,
            format!("not answering: {}", silent.join("; ")),
        ),
        (true, true) => (
            Outcome::Pass,
            format!("{} media node(s): {all_well}", f.nodes.len()),
        ),
    }
}

fn pods(f: &Facts) -> Vec<(&'static str, String)> {
    f.nodes.iter().map(|n| ("Pod", n.pod.clone())).collect()
}

fn logoff_in_force(f: &Facts) -> Finding {
    let rendered = f.rendered.map(|c| idle_timeout(c).as_secs());
    let (outcome, message) = per_node(
        f,
        |e| match rendered {
            Some(r) if r != e.idle_timeout_seconds => Err(format!(
                "runs an idle timeout of {} s, not the rendered {r} s: the pod has not restarted onto the current config (kubectl rollout status)",
                e.idle_timeout_seconds
            )),
            _ => Ok(()),
        },
        "each enforces the rendered idle timeout",
    );
    finding(
        LOGOFF,
        "idle-timeout-in-force",
        (outcome, Severity::High),
        message,
        pods(f),
    )
}

fn encryption_rendered(f: &Facts) -> Finding {
    let (outcome, message) = match f.rendered.map(|c| c.meetings.media_encryption.as_str()) {
        None => (
            Outcome::NotChecked,
            "no node config is rendered for this spec".to_string(),
        ),
        Some(mode) if bedside_crds::policy::MEDIA_ENCRYPTION.allows(mode) => (
            Outcome::Pass,
            format!(
                "the node config locks media encryption ({mode}): DTLS-SRTP with AEAD_AES_256_GCM only"
            ),
        ),
        Some(mode) => (
            Outcome::Fail,
            format!(
                "the node config's media encryption is {mode}: {}",
                bedside_crds::policy::MEDIA_ENCRYPTION.message()
            ),
        ),
    };
    finding(
        ENCRYPTION,
        "media-encryption-locked",
        (outcome, Severity::Critical),
        message,
        config_map(f),
    )
}

fn srtp_sessions(f: &Facts) -> Finding {
    let (outcome, message) = per_node(
        f,
        |e| {
            let others: Vec<&String> = e
                .srtp_sessions
                .keys()
                .chain(&e.srtp_allowed)
                .filter(|p| *p != REQUIRED_SRTP)
                .collect();
            if e.srtp_allowed.is_empty() {
                Err("reports no SRTP policy".into())
            } else if others.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "allows or completed sessions with {others:?}, not only {REQUIRED_SRTP}: run a bedside-media-node of this operator's release"
                ))
            }
        },
        "each allows only AEAD_AES_256_GCM, and every session it completed used it",
    );
    finding(
        ENCRYPTION,
        "srtp-aes-256-gcm-only",
        (outcome, Severity::Critical),
        message,
        pods(f),
    )
}

fn authentication(f: &Facts) -> Finding {
    let (outcome, message) = match f.rendered {
        None => (
            Outcome::NotChecked,
            "no node config is rendered for this spec".to_string(),
        ),
        Some(c) => {
            let waiting = c.meetings.waiting_room.as_str();
            let passcode = c.meetings.passcode.as_str();
            if bedside_crds::policy::WAITING_ROOM.allows(waiting)
                && bedside_crds::policy::PASSCODE.allows(passcode)
            {
                (
                    Outcome::Pass,
                    format!(
                        "joins need a signed, expiring link; waiting room {waiting}, passcode {passcode}"
                    ),
                )
            } else {
                (
                    Outcome::Fail,
                    format!(
                        "waiting room {waiting}, passcode {passcode}: {} / {}",
                        bedside_crds::policy::WAITING_ROOM.message(),
                        bedside_crds::policy::PASSCODE.message()
                    ),
                )
            }
        }
    };
    finding(
        AUTHENTICATION,
        "waiting-room-and-passcode",
        (outcome, Severity::High),
        message,
        config_map(f),
    )
}

fn sinks_delivering(f: &Facts) -> Finding {
    let (outcome, message) = match status::sinks_verdict(f.sinks) {
        (Some(true), _, message) => (Outcome::Pass, message),
        (Some(false), _, message) => (
            Outcome::Fail,
            format!(
                "{message}: records wait in the buffers; bring the sink back (its address, its certificate, its credentials)"
            ),
        ),
        (None, _, message) if f.media_replicas == 0 && f.sinks.is_empty() => {
            (Outcome::NotChecked, message)
        }
        (None, _, message) => (Outcome::Warn, message),
    };
    finding(
        AUDIT,
        "sinks-delivering",
        (outcome, Severity::Critical),
        message,
        tenant(f),
    )
}

fn buffers(f: &Facts) -> Finding {
    let full: Vec<&str> = f
        .sinks
        .iter()
        .filter(|r| r.health.as_ref().is_ok_and(|h| h.buffer_full))
        .map(|r| r.reporter.as_str())
        .collect();
    let (outcome, message) = if full.is_empty() {
        (
            Outcome::Pass,
            "every audit buffer is below its limit (spec.audit.bufferSize)".to_string(),
        )
    } else {
        (
            Outcome::Fail,
            format!(
                "the audit buffer is past its limit at {}: a sink is down or too slow; spec.audit.whenBufferFull decides whether joins are refused",
                full.join(", ")
            ),
        )
    };
    finding(
        AUDIT,
        "buffers-below-limit",
        (outcome, Severity::High),
        message,
        tenant(f),
    )
}

fn chain_at_rest(f: &Facts) -> Finding {
    let now = f.now;
    let (outcome, message) = per_node(
        f,
        |e| {
            if let Some(broken) = &e.chain.broken {
                return Err(format!(
                    "its audit records at rest fail verification: {broken}; keep the pod's audit volume for investigation and verify the sinks' copies (bedside-audit verify)"
                ));
            }
            let checked =
                Timestamp::from_second(e.chain.checked_at).unwrap_or(Timestamp::UNIX_EPOCH);
            if now.duration_since(checked) > CHAIN_CHECK_STALE {
                return Err(format!("last checked its chain at {checked}, too long ago"));
            }
            Ok(())
        },
        "each verified its audit records at rest up to its chain's head within the last minutes",
    );
    finding(
        INTEGRITY,
        "audit-chain-verified",
        (outcome, Severity::Critical),
        message,
        pods(f),
    )
}

fn certificate(f: &Facts) -> Finding {
    let objects = vec![("Secret", f.objects.tls_secret.clone())];
    let (outcome, message) = match (
        status::certificate_verdict(f.certificate),
        f.certificate_expiry,
    ) {
        ((Some(false), _, message), _) | ((None, _, message), _) => (Outcome::Fail, message),
        (_, None) => (
            Outcome::Fail,
            format!(
                "Secret {} does not exist yet: signaling has no certificate to serve",
                f.objects.tls_secret
            ),
        ),
        (_, Some(Err(why))) => (
            Outcome::Fail,
            format!(
                "cannot read the certificate in Secret {}: {why}",
                f.objects.tls_secret
            ),
        ),
        (_, Some(Ok(end))) if *end <= f.now => (
            Outcome::Fail,
            format!("the certificate expired at {end}: browsers refuse the connection; renew it"),
        ),
        (_, Some(Ok(end))) if end.duration_since(f.now) < CERTIFICATE_WARNING => (
            Outcome::Warn,
            format!(
                "the certificate expires at {end}, within 14 days: renew it (with tls.issuerRef, check the Certificate's status)"
            ),
        ),
        (_, Some(Ok(end))) => (
            Outcome::Pass,
            format!("signaling serves a certificate valid until {end}; media is DTLS-SRTP"),
        ),
    };
    finding(
        TRANSMISSION,
        "certificate-valid",
        (outcome, Severity::High),
        message,
        objects,
    )
}

/// What only people can do, with what to do.
fn manual() -> Vec<Finding> {
    let item = |control, check, message: &str| {
        finding(
            control,
            check,
            (Outcome::Manual, Severity::Info),
            message.to_string(),
            Vec::new(),
        )
    };
    vec![
        item(
            ("164.308(a)(1)(ii)(A)", "Risk analysis"),
            "risk-analysis",
            "manual: document an accurate and thorough assessment of the risks to ePHI, including this video service; bedside cannot check it",
        ),
        item(
            ("164.308(a)(5)", "Security awareness and training"),
            "workforce-training",
            "manual: train the clinicians and staff who use bedside; bedside cannot check it",
        ),
        item(
            BAA,
            "agreement-signed",
            "manual: keep the signed Business Associate Agreement; spec.baa records its dates, not the signature",
        ),
        item(
            ("164.312(a)(2)(ii)", "Emergency access procedure"),
            "emergency-access",
            "manual: bedside gives emergency access with BreakGlass objects (docs/operator.md, Emergency access); write down who may ask for and approve them (RBAC on breakglasses) and review each one kept",
        ),
    ]
}

#[cfg(test)]
mod tests;
