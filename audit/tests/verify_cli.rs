//! `bedside-audit verify` as an auditor runs it on a stored log.

use std::process::Command;

use bedside_audit::event::{Action, Actor, AuthMethod, OpaqueId, Outcome, Place};
use bedside_audit::{AuditEvent, AuditKey, Chain};

fn log(key: &[u8], n: usize) -> String {
    let mut chain = Chain::new(AuditKey::new(key).expect("key"), None);
    let mut out = String::new();
    for i in 0..n {
        let event = AuditEvent {
            tenant: OpaqueId::new("mercy-clinic").expect("id"),
            actor: Actor {
                user: Some(OpaqueId::new(format!("u-{i}")).expect("id")),
                role: None,
                auth: AuthMethod::JoinToken,
            },
            action: Action::Join,
            outcome: Outcome::success(),
            place: Place {
                node: OpaqueId::new("n1").expect("id"),
                room: None,
                client_ip: None,
                media_path: None,
                break_glass: None,
            },
        };
        out.push_str(
            &chain
                .append(event, jiff::Timestamp::now())
                .expect("append")
                .1,
        );
        out.push('\n');
    }
    out
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bedside-audit"))
        .args(args)
        .output()
        .expect("run bedside-audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn verify_passes_an_intact_log_and_names_the_first_broken_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("audit.key");
    std::fs::write(&key, [5u8; 32]).expect("key");
    let key = key.to_string_lossy().to_string();
    let file = dir.path().join("audit.jsonl");
    let text = log(&[5u8; 32], 4);
    std::fs::write(&file, &text).expect("log");
    let file = file.to_string_lossy().to_string();

    let (code, out) = run(&["verify", &file, "--key-file", &key]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 4 records in 1 chain(s)"), "{out}");

    std::fs::write(&file, text.replacen("u-1", "u-7", 1)).expect("alter");
    let (code, out) = run(&["verify", &file, "--key-file", &key]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("line 2 (seq 2)") && out.contains("altered"),
        "{out}"
    );

    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&file, [lines[0], lines[2], lines[3]].join("\n")).expect("remove");
    let (code, out) = run(&["verify", &file, "--key-file", &key]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 record(s) removed"), "{out}");

    std::fs::write(&file, &text).expect("restore");
    let other = dir.path().join("other.key");
    std::fs::write(&other, [6u8; 32]).expect("key");
    let (code, out) = run(&["verify", &file, "--key-file", &other.to_string_lossy()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("another tenant's key"), "{out}");

    let (code, out) = run(&["verify", &file, "--key-file", "/nonexistent/key"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("/nonexistent/key"), "{out}");
}
