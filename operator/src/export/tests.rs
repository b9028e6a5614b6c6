use super::*;
use bedside_audit::chain::Chain;
use bedside_audit::event::{Actor, AuditEvent, AuthMethod, OpaqueId, Outcome, Place};

fn at(text: &str) -> Timestamp {
    text.parse().expect("a time")
}

fn event(node: &str, action: Action) -> AuditEvent {
    AuditEvent {
        tenant: OpaqueId::new("mercy-clinic").expect("id"),
        actor: Actor {
            user: None,
            role: None,
            auth: AuthMethod::None,
        },
        action,
        outcome: Outcome::success(),
        place: Place {
            node: OpaqueId::new(node).expect("id"),
            room: None,
            client_ip: None,
            media_path: None,
            break_glass: None,
        },
    }
}

/// A chain of `node`: a join at 10:00, a checkpoint at 10:05, a join at 11:00.
fn records(key: &[u8], node: &str) -> Vec<String> {
    let mut chain = Chain::new(AuditKey::new(key).expect("key"), None);
    [
        (Action::Join, "2026-12-01T10:00:00Z"),
        (Action::Checkpoint, "2026-12-01T10:05:00Z"),
        (Action::Join, "2026-12-01T11:00:00Z"),
    ]
    .into_iter()
    .map(|(action, time)| {
        chain
            .append(event(node, action), at(time))
            .expect("sealed")
            .1
    })
    .collect()
}

fn break_glass(name: &str, created: &str, ended: Option<&str>) -> BreakGlass {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "bedside.health/v1alpha1", "kind": "BreakGlass",
        "metadata": {"name": name, "namespace": "clinic-mercy", "creationTimestamp": created},
        "spec": {"tenant": "mercy-clinic", "visit": "visit-7", "clinician": "Practitioner/dr-9",
                 "requestedBy": "Practitioner/dr-9", "reason": "the host dropped out mid-visit, urgent",
                 "incident": "INC-7", "ttlMinutes": 30},
        "status": {"phase": if ended.is_some() { "Expired" } else { "Active" }, "endedAt": ended},
    }))
    .expect("a BreakGlass")
}

fn revision(n: i64, created: &str, hash: &str) -> ControllerRevision {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("media-{n}"), "creationTimestamp": created},
        "revision": n,
        "data": {"spec": {"template": {"metadata": {"annotations": {CONFIG_HASH_ANNOTATION: hash}}}}},
    }))
    .expect("a revision")
}

#[test]
fn the_export_holds_what_lived_in_its_range_and_each_chains_head_and_checkpoints() {
    let tenant = crate::build::objects::tests::tenant("mercy-clinic.yaml");
    let key = [7u8; 32];
    let lines = records(&key, "mercy-clinic-media-0");
    let audit_key = AuditKey::new(&key).expect("key");
    let grants = [
        break_glass(
            "before",
            "2026-11-01T10:00:00Z",
            Some("2026-11-01T10:30:00Z"),
        ),
        break_glass(
            "during",
            "2026-12-01T09:00:00Z",
            Some("2026-12-01T09:30:00Z"),
        ),
        break_glass("still-active", "2026-12-01T12:00:00Z", None),
    ];
    let revisions = [
        revision(1, "2026-11-01T00:00:00Z", "aaa"),
        revision(2, "2026-11-20T00:00:00Z", "bbb"),
        revision(3, "2026-12-01T09:15:00Z", "ccc"),
        revision(4, "2026-12-03T00:00:00Z", "ddd"),
    ];
    let results = [
        serde_json::json!({"policy": "hipaa-164.312(b)", "rule": "sinks-delivering",
        "result": "pass", "severity": "critical", "message": "every sink delivers"}),
    ];
    let evidence = build(&Inputs {
        tenant: &tenant,
        report_results: &results,
        revisions: &revisions,
        break_glass: &grants,
        records: Some(("siem.jsonl", &lines, &audit_key)),
        range: (at("2026-12-01T00:00:00Z"), at("2026-12-02T00:00:00Z")),
        now: at("2026-12-04T00:00:00Z"),
    });
    let names: Vec<&str> = evidence
        .break_glass
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(names, ["during", "still-active"]);
    // The revision in force when the range began, and the one made in it.
    let hashes: Vec<&str> = evidence
        .config_history
        .iter()
        .map(|r| r.config_hash.as_str())
        .collect();
    assert_eq!(hashes, ["bbb", "ccc"]);
    let audit = &evidence.audit_chains;
    assert!(audit.verified, "{audit:?}");
    let chain = &audit.chains[0];
    assert_eq!(chain.records_in_range, 3);
    assert_eq!(chain.head.as_ref().map(|h| h.seq), Some(3));
    assert_eq!(
        chain.checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(audit.actions.get("join"), Some(&2));
    assert_eq!(evidence.controls[0].check, "sinks-delivering");
    assert!(evidence.about.disclaimer.contains("not an auditor"));

    let page = html::render(&evidence);
    assert!(page.contains("<table id=\"controls\">"), "{page}");
    assert!(page.contains("sinks-delivering") && page.contains("INC-7"));
    assert!(!page.contains("<script"), "the page runs nothing");
}

#[test]
fn an_altered_records_file_is_said_not_to_verify_and_text_cannot_become_markup() {
    let tenant = crate::build::objects::tests::tenant("mercy-clinic.yaml");
    let key = [7u8; 32];
    let mut lines = records(&key, "mercy-clinic-media-0");
    lines[1] = lines[1].replace("10:05:00", "10:06:00");
    let audit_key = AuditKey::new(&key).expect("key");
    let results = [
        serde_json::json!({"policy": "p", "rule": "r", "result": "fail",
        "message": "<img src=x onerror=alert(1)>"}),
    ];
    let evidence = build(&Inputs {
        tenant: &tenant,
        report_results: &results,
        revisions: &[],
        break_glass: &[],
        records: Some(("siem.jsonl", &lines, &audit_key)),
        range: (at("2026-12-01T00:00:00Z"), at("2026-12-02T00:00:00Z")),
        now: at("2026-12-04T00:00:00Z"),
    });
    assert!(!evidence.audit_chains.verified);
    assert!(
        evidence
            .audit_chains
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains("line 2"),
        "{:?}",
        evidence.audit_chains
    );
    let page = html::render(&evidence);
    assert!(page.contains("&lt;img src=x"), "escaped");
    assert!(!page.contains("<img"), "no markup from the data");
}
