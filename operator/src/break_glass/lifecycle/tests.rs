use super::*;

fn spec() -> BreakGlassSpec {
    BreakGlassSpec {
        tenant: "mercy".into(),
        visit: "visit-7".into(),
        clinician: "Practitioner/dr-9".into(),
        requested_by: "Practitioner/dr-9".into(),
        reason: "the host dropped out while the patient reported chest pain".into(),
        incident: "INC-2041".into(),
        ttl_minutes: 30,
        approval_required: false,
        approved_by: None,
        revoked_by: None,
    }
}

fn t0() -> Timestamp {
    "2026-12-04T10:00:00Z".parse().expect("a time")
}

fn mins(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

/// Runs the decision at `now` from `status`, as the shell does: the steps it seals are added
/// to `recorded`.
fn at(spec: &BreakGlassSpec, status: &BreakGlassStatus, now: Timestamp) -> Decision {
    decide(&Facts {
        name: "bg-1",
        spec,
        status,
        created: t0(),
        tenant_found: true,
        now,
    })
}

fn sealed(mut decision: Decision) -> (Decision, BreakGlassStatus) {
    let mut status = decision.status.clone();
    status
        .recorded
        .extend(decision.steps.iter().map(|s| s.as_str().to_string()));
    decision.status = status.clone();
    (decision, status)
}

fn condition<'a>(status: &'a BreakGlassStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

#[test]
fn without_approval_it_is_active_at_once_for_its_ttl_then_expires_by_itself() {
    let spec = spec();
    let (first, status) = sealed(at(&spec, &BreakGlassStatus::default(), t0()));
    assert!(first.active);
    assert_eq!(first.steps, [Step::Requested, Step::Activated]);
    assert_eq!(status.expires_at, Some(t0() + mins(30)));
    assert_eq!(first.look_again, Some(Duration::from_secs(30 * 60)));
    assert_eq!(condition(&status, "Active").status, "True");
    assert_eq!(condition(&status, "Approved").reason, "NotRequired");

    let later = at(&spec, &status, t0() + mins(29));
    assert!(later.active && later.steps.is_empty(), "{later:?}");

    let (over, status) = sealed(at(&spec, &status, t0() + mins(30)));
    assert!(!over.active);
    assert_eq!(over.steps, [Step::Expired]);
    assert_eq!(over.reason_code, Some("expired"));
    assert_eq!(status.phase, Some(Phase::Expired));
    assert_eq!(status.ended_at, Some(t0() + mins(30)));
    assert_eq!(condition(&status, "Expired").status, "True");
    assert_eq!(condition(&status, "Active").status, "False");
    // Kept for review: nothing changes it any more, nothing is sealed twice.
    let again = at(&spec, &status, t0() + mins(300));
    assert!(!again.active && again.steps.is_empty());
    assert_eq!(again.status.phase, Some(Phase::Expired));
}

#[test]
fn an_approval_is_awaited_for_an_hour_and_the_ttl_counts_from_it() {
    let mut spec = spec();
    spec.approval_required = true;
    let (waiting, status) = sealed(at(&spec, &BreakGlassStatus::default(), t0()));
    assert!(!waiting.active);
    assert_eq!(waiting.steps, [Step::Requested]);
    assert_eq!(status.phase, Some(Phase::Requested));
    assert_eq!(condition(&status, "Approved").reason, "AwaitingApproval");
    assert_eq!(waiting.look_again, Some(Duration::from_secs(3600)));

    spec.approved_by = Some("Practitioner/dr-2".into());
    let (approved, status) = sealed(at(&spec, &status, t0() + mins(10)));
    assert!(approved.active);
    assert_eq!(approved.steps, [Step::Approved, Step::Activated]);
    assert_eq!(status.expires_at, Some(t0() + mins(40)));
    assert_eq!(
        Step::Approved.actor(&spec).as_deref(),
        Some("practitioner.dr-2")
    );

    // Never approved: it expires unused.
    let mut unapproved = spec.clone();
    unapproved.approved_by = None;
    let (gone, status) = sealed(at(
        &unapproved,
        &BreakGlassStatus::default(),
        t0() + mins(60),
    ));
    assert!(!gone.active);
    assert_eq!(gone.reason_code, Some("not-activated-in-time"));
    assert_eq!(status.phase, Some(Phase::Expired));
    assert_eq!(gone.steps, [Step::Requested, Step::Expired]);
}

#[test]
fn the_requester_cannot_approve_their_own_request() {
    let mut spec = spec();
    spec.approval_required = true;
    spec.approved_by = Some(spec.requested_by.clone());
    let (refused, status) = sealed(at(&spec, &BreakGlassStatus::default(), t0()));
    assert!(!refused.active);
    assert_eq!(refused.reason_code, Some("approver-is-requester"));
    assert_eq!(status.phase, Some(Phase::Refused));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("second person"),
        "{status:?}"
    );
}

#[test]
fn a_revocation_ends_it_at_once_and_names_who() {
    let mut spec = spec();
    let (_, status) = sealed(at(&spec, &BreakGlassStatus::default(), t0()));
    spec.revoked_by = Some("Practitioner/sec-1".into());
    let (revoked, status) = sealed(at(&spec, &status, t0() + mins(5)));
    assert!(!revoked.active);
    assert_eq!(revoked.steps, [Step::Revoked]);
    assert_eq!(
        Step::Revoked.actor(&spec).as_deref(),
        Some("practitioner.sec-1")
    );
    assert_eq!(status.phase, Some(Phase::Revoked));
    assert_eq!(condition(&status, "Revoked").status, "True");
    // Taking the revocation back does not bring the grant back.
    spec.revoked_by = None;
    assert!(!at(&spec, &status, t0() + mins(6)).active);
}

#[test]
fn editing_an_active_grant_ends_it_rather_than_extending_it() {
    let mut spec = spec();
    let (_, status) = sealed(at(&spec, &BreakGlassStatus::default(), t0()));
    spec.ttl_minutes = 60;
    let (refused, status) = sealed(at(&spec, &status, t0() + mins(20)));
    assert!(!refused.active);
    assert_eq!(refused.reason_code, Some("grant-changed"));
    assert_eq!(status.phase, Some(Phase::Refused));
}

#[test]
fn what_the_schema_refuses_is_refused_here_too() {
    for (edit, code) in [
        (
            (|s: &mut BreakGlassSpec| s.ttl_minutes = 61) as fn(&mut BreakGlassSpec),
            "ttl-out-of-bounds",
        ),
        (
            |s: &mut BreakGlassSpec| s.reason = "urgent".into(),
            "reason-missing",
        ),
        (
            |s: &mut BreakGlassSpec| s.clinician = "Practitioner/jane.doe".into(),
            "clinician-not-a-reference",
        ),
    ] {
        let mut spec = spec();
        edit(&mut spec);
        let decision = at(&spec, &BreakGlassStatus::default(), t0());
        assert!(!decision.active, "{code}");
        assert_eq!(decision.reason_code, Some(code));
    }
}

#[test]
fn without_its_tenant_it_waits_and_conditions_keep_their_transition_times() {
    let spec = spec();
    let decision = decide(&Facts {
        name: "bg-1",
        spec: &spec,
        status: &BreakGlassStatus::default(),
        created: t0(),
        tenant_found: false,
        now: t0(),
    });
    assert!(!decision.active);
    assert_eq!(decision.status.phase, Some(Phase::Requested));
    assert!(
        decision
            .status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("HealthcareTenant mercy"),
        "{decision:?}"
    );
    let (_, status) = sealed(at(&spec, &BreakGlassStatus::default(), t0()));
    let later = at(&spec, &status, t0() + mins(3));
    assert_eq!(
        condition(&later.status, "Requested").last_transition_time,
        Time(t0())
    );
}
