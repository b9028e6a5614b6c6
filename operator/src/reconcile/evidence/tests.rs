use bedside_audit::evidence::{AuditHealthReport, ChainCheck, SinkState};
use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::build::{BuildInputs, desired, objects_tests_tenant};
use crate::reconcile::children::built;
use crate::reconcile::status::{Built, SinkReport};

const NOW: &str = "2026-12-04T10:00:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("a time")
}

fn the_build() -> Built {
    let tenant = objects_tests_tenant("mercy-clinic.yaml");
    let desired = desired(
        &tenant,
        BuildInputs {
            media_allowed: true,
            operator_namespace: None,
            mixed_protocol_load_balancers: true,
        },
    )
    .expect("built");
    built(&desired)
}

fn node(pod: &str) -> NodeReport {
    NodeReport {
        pod: pod.into(),
        evidence: Ok(NodeEvidence {
            audit: AuditHealthReport {
                sinks: vec![sink(SinkState::Up, None)],
                ..Default::default()
            },
            chain: ChainCheck {
                head_seq: Some(41),
                records_checked: 12,
                checked_at: now().as_second() - 20,
                broken: None,
            },
            srtp_sessions: [("AEAD_AES_256_GCM".to_string(), 7)].into(),
            srtp_allowed: vec!["AEAD_AES_256_GCM".into()],
            idle_timeout_seconds: 900,
            media_encryption: "Required".into(),
        }),
    }
}

fn sink(state: SinkState, reason: Option<&'static str>) -> bedside_audit::evidence::SinkReport {
    bedside_audit::evidence::SinkReport {
        sink: 0,
        kind: "syslog".into(),
        state,
        reason: reason.map(Into::into),
        buffered_bytes: 2048,
    }
}

/// A tenant as a healthy reconcile sees it: the BAA in force, its objects applied, a
/// certificate good for 60 days, two nodes delivering and verifying their chains.
struct World {
    built: Built,
    certificate: CertificateState,
    expiry: Option<Result<Timestamp, String>>,
    nodes: Vec<NodeReport>,
    baa: BaaState,
    replicas: i32,
    objects: Objects,
}

impl World {
    fn healthy() -> Self {
        Self {
            built: the_build(),
            certificate: CertificateState::TenantSecret {
                name: "mercy-tls".into(),
                exists: true,
            },
            expiry: Some(Ok(now() + SignedDuration::from_hours(60 * 24))),
            nodes: vec![node("mercy-media-0"), node("mercy-media-1")],
            baa: BaaState::Active { expires_on: None },
            replicas: 2,
            objects: Objects {
                tenant: "mercy".into(),
                tls_secret: "mercy-tls".into(),
                ..Default::default()
            },
        }
    }

    fn findings(&self) -> Vec<Finding> {
        let sinks: Vec<SinkReport> = crate::reconcile::sinks::sink_reports(&self.nodes);
        evaluate(&Facts {
            now: now(),
            baa: self.baa,
            rendered: self.built.config.as_ref(),
            media_pod: self.built.media_pod.as_ref(),
            network_policy: true,
            drift_reverted: &[],
            certificate: &self.certificate,
            certificate_expiry: self.expiry.as_ref(),
            sinks: &sinks,
            nodes: &self.nodes,
            media_replicas: self.replicas,
            objects: &self.objects,
        })
    }

    fn edit(&mut self, pod: usize, change: impl FnOnce(&mut NodeEvidence)) {
        if let Ok(evidence) = self.nodes[pod].evidence.as_mut() {
            change(evidence);
        }
    }
}

fn the(findings: &[Finding], check: &str) -> Finding {
    findings
        .iter()
        .find(|f| f.check == check)
        .cloned()
        .unwrap_or_else(|| panic!("no finding {check}"))
}

#[test]
fn a_healthy_tenant_passes_every_software_check_and_its_manual_items_are_never_passed() {
    let findings = World::healthy().findings();
    for f in &findings {
        match f.check {
            "risk-analysis" | "workforce-training" | "agreement-signed" | "emergency-access" => {
                assert_eq!(f.outcome, Outcome::Manual, "{f:?}");
                assert!(f.message.starts_with("manual: "), "{f:?}");
            }
            _ => assert_eq!(f.outcome, Outcome::Pass, "{f:?}"),
        }
    }
    let controls: Vec<&str> = findings.iter().map(|f| f.control).collect();
    for control in [
        "164.312(a)(1)",
        "164.312(a)(2)(iii)",
        "164.312(a)(2)(iv)",
        "164.312(b)",
        "164.312(c)(1)",
        "164.312(d)",
        "164.312(e)(1)",
        "164.312(a)(2)(ii)",
    ] {
        assert!(controls.contains(&control), "{control} is reported");
    }
    let summary = summarize(&findings);
    assert_eq!((summary.fail, summary.warn, summary.manual), (0, 0, 4));
}

#[test]
fn a_sink_that_is_down_fails_audit_controls_and_says_what_waits() {
    let mut world = World::healthy();
    world.edit(1, |e| {
        e.audit.sinks = vec![sink(SinkState::Down, Some("unreachable"))];
    });
    let found = the(&world.findings(), "sinks-delivering");
    assert_eq!(found.outcome, Outcome::Fail);
    assert!(
        found
            .message
            .contains("mercy-media-1: sink 0 (syslog) is down (unreachable)"),
        "{}",
        found.message
    );
    world.edit(1, |e| e.audit.buffer_full = true);
    assert_eq!(
        the(&world.findings(), "buffers-below-limit").outcome,
        Outcome::Fail
    );
}

#[test]
fn a_certificate_within_fourteen_days_warns_and_an_expired_or_unreadable_one_fails() {
    let mut world = World::healthy();
    world.expiry = Some(Ok(now() + SignedDuration::from_hours(5 * 24)));
    let found = the(&world.findings(), "certificate-valid");
    assert_eq!(found.outcome, Outcome::Warn);
    assert!(
        found.message.contains("within 14 days"),
        "{}",
        found.message
    );

    world.expiry = Some(Ok(now() - SignedDuration::from_hours(1)));
    assert_eq!(
        the(&world.findings(), "certificate-valid").outcome,
        Outcome::Fail
    );
    world.expiry = Some(Err("tls.crt is not a PEM certificate".into()));
    assert_eq!(
        the(&world.findings(), "certificate-valid").outcome,
        Outcome::Fail
    );
    world.expiry = None;
    world.certificate = CertificateState::TenantSecret {
        name: "mercy-tls".into(),
        exists: false,
    };
    let found = the(&world.findings(), "certificate-valid");
    assert_eq!(found.outcome, Outcome::Fail);
    assert!(
        found.message.contains("does not exist"),
        "{}",
        found.message
    );
}

#[test]
fn records_at_rest_that_fail_verification_fail_integrity_naming_the_pod() {
    let mut world = World::healthy();
    world.edit(0, |e| {
        e.chain.broken =
            Some("the buffer sink-1.jsonl: line 3 (seq 40): its MAC does not verify".into());
    });
    let found = the(&world.findings(), "audit-chain-verified");
    assert_eq!(found.outcome, Outcome::Fail);
    assert!(
        found.message.starts_with("mercy-media-0: "),
        "{}",
        found.message
    );
    assert!(found.message.contains("seq 40"), "{}", found.message);

    // A check from long ago is no evidence of now.
    let mut world = World::healthy();
    world.edit(1, |e| e.chain.checked_at = now().as_second() - 3600);
    assert_eq!(
        the(&world.findings(), "audit-chain-verified").outcome,
        Outcome::Fail
    );
}

#[test]
fn a_node_running_another_idle_timeout_or_srtp_profile_fails_its_control() {
    let mut world = World::healthy();
    world.edit(1, |e| e.idle_timeout_seconds = 3600);
    let found = the(&world.findings(), "idle-timeout-in-force");
    assert_eq!(found.outcome, Outcome::Fail);
    assert!(
        found.message.contains("not the rendered 900 s"),
        "{}",
        found.message
    );

    let mut world = World::healthy();
    world.edit(0, |e| {
        e.srtp_sessions.insert("AES128_CM_SHA1_80".into(), 1);
    });
    assert_eq!(
        the(&world.findings(), "srtp-aes-256-gcm-only").outcome,
        Outcome::Fail
    );
}

#[test]
fn a_node_that_does_not_answer_is_a_warning_and_stopped_media_is_not_checked() {
    let mut world = World::healthy();
    world.nodes[1].evidence = Err("no answer within 2 s".into());
    let found = the(&world.findings(), "audit-chain-verified");
    assert_eq!(found.outcome, Outcome::Warn);
    assert!(found.message.contains("no answer"), "{}", found.message);

    let mut world = World::healthy();
    world.baa = BaaState::Expired {
        expired_on: "2026-11-30".parse().expect("a date"),
    };
    world.replicas = 0;
    world.nodes.clear();
    let findings = world.findings();
    assert_eq!(the(&findings, "agreement-in-force").outcome, Outcome::Fail);
    for check in [
        "idle-timeout-in-force",
        "srtp-aes-256-gcm-only",
        "audit-chain-verified",
    ] {
        assert_eq!(
            the(&findings, check).outcome,
            Outcome::NotChecked,
            "{check}"
        );
    }
}

#[test]
fn the_report_marks_manual_items_skip_with_instructions_and_counts_them_apart() {
    let mut world = World::healthy();
    world.expiry = Some(Ok(now() + SignedDuration::from_hours(24)));
    let findings = world.findings();
    let tenant = objects_tests_tenant("mercy-clinic.yaml");
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report"),
        "reports",
    );
    let report = crate::reconcile::report::compliance_report(&tenant, &resource, &findings, now())
        .expect("a report");
    let value = serde_json::to_value(&report).expect("json");
    let results = value["results"].as_array().expect("results");
    assert_eq!(results.len(), findings.len());
    let manual: Vec<&serde_json::Value> = results
        .iter()
        .filter(|r| r["properties"]["manual"] == "true")
        .collect();
    assert_eq!(manual.len(), 4);
    assert!(
        manual
            .iter()
            .all(|r| r["result"] == "skip" && r["scored"] == false)
    );
    assert_eq!(value["summary"]["warn"], 1, "{}", value["summary"]);
    assert_eq!(value["summary"]["skip"], 4);
    assert_eq!(value["scope"]["kind"], "HealthcareTenant");
    let certificate = results
        .iter()
        .find(|r| r["rule"] == "certificate-valid")
        .expect("certificate");
    assert_eq!(certificate["policy"], "hipaa-164.312(e)(1)");
    assert_eq!(certificate["resources"][0]["kind"], "Secret");
}
