//! `bedside-operator validate` and `crd` as a platform team's pipeline runs them.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bedside-operator"))
        .args(args)
        .output()
        .expect("run bedside-operator")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn valid_examples_pass_with_exit_code_zero() {
    let a = repo("examples/mercy-clinic.yaml");
    let b = repo("examples/lakeside-behavioral.yaml");
    let output = operator(&[
        "validate",
        a.to_str().expect("path"),
        b.to_str().expect("path"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(
        stdout(&output).matches(": valid").count(),
        2,
        "{}",
        stdout(&output)
    );
}

#[test]
fn an_invalid_tenant_fails_with_every_violation_and_its_field_path() {
    let valid = repo("examples/mercy-clinic.yaml");
    let invalid = repo("examples/invalid/recording-enabled.yaml");
    let output = operator(&[
        "validate",
        valid.to_str().expect("path"),
        invalid.to_str().expect("path"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("mercy-clinic: valid"), "{text}");
    assert!(text.contains("recording-enabled: 2 violation(s)"), "{text}");
    assert!(
        text.contains(
            "spec.meetings.recording: recording must be Disabled: a recording of a visit is PHI"
        ),
        "{text}"
    );
}

#[test]
fn a_missing_file_and_broken_yaml_fail_with_a_message_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "spec: [unclosed\n").expect("write");
    let output = operator(&[
        "validate",
        "/nonexistent/tenant.yaml",
        broken.to_str().expect("path"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("cannot read /nonexistent/tenant.yaml"),
        "{text}"
    );
    assert!(text.contains("broken.yaml: not valid YAML"), "{text}");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
}

#[test]
fn files_without_tenants_are_an_error_not_a_silent_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let configmap = dir.path().join("cm.yaml");
    std::fs::write(
        &configmap,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .expect("write");
    let output = operator(&["validate", configmap.to_str().expect("path")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("no HealthcareTenant found"));
}

#[test]
fn tenants_can_be_piped_in_on_stdin_beside_other_kinds() {
    let tenant = std::fs::read_to_string(repo("examples/mercy-clinic.yaml")).expect("example");
    let input =
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: tenant-mercy}}\n---\n{tenant}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bedside-operator"))
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("mercy-clinic: valid"));
}

#[test]
fn old_objects_turn_the_check_into_an_update_with_transition_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = std::fs::read_to_string(repo("examples/mercy-clinic.yaml")).expect("example");
    let new = old.replace("reference: BAA-2026-0042", "reference: BAA-2026-0043");
    let (old_path, new_path) = (dir.path().join("old.yaml"), dir.path().join("new.yaml"));
    std::fs::write(&old_path, &old).expect("write");
    std::fs::write(&new_path, &new).expect("write");

    // As a create, the new reference is fine...
    let output = operator(&["validate", new_path.to_str().expect("path")]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    // ...as an update of the stored tenant, it is a BAA reference changed without a new date.
    let output = operator(&[
        "validate",
        "--old",
        old_path.to_str().expect("path"),
        new_path.to_str().expect("path"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains(
            "spec.baa.reference: baa.reference may only change together with baa.signedOn"
        ),
        "{}",
        stdout(&output)
    );
}

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let output = operator(&["crd"]);
    assert_eq!(output.status.code(), Some(0));
    let committed =
        std::fs::read_to_string(repo("crds/healthcaretenant.yaml")).expect("committed CRD");
    assert_eq!(
        stdout(&output),
        committed,
        "run `make crd` and commit crds/healthcaretenant.yaml"
    );
}
