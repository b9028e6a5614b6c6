//! In-process, with the CRD's own schema and CEL rules: every tenant in examples/ passes; every
//! one in examples/invalid/ is refused with the message its header promises.

use bedside_crds::HealthcareTenant;
use bedside_crds::validation::{TenantValidator, Violation};
use bedside_tests::examples::{
    documents, examples_dir, expected_violations, invalid_tenant_files, is_update,
    valid_tenant_files,
};
use serde_json::Value;

fn violations_of(validator: &TenantValidator, path: &std::path::Path) -> Vec<Violation> {
    let docs = documents(path);
    if is_update(path) {
        assert_eq!(
            docs.len(),
            2,
            "{}: an update example holds old and new",
            path.display()
        );
        assert!(
            validator.validate(&docs[0]).is_empty(),
            "{}: the stored object of an update example must itself be valid",
            path.display()
        );
        validator.validate_update(&docs[1], &docs[0])
    } else {
        assert_eq!(docs.len(), 1, "{}", path.display());
        validator.validate(&docs[0])
    }
}

#[test]
fn every_example_tenant_is_valid_and_deserializes() {
    let validator = TenantValidator::new().expect("validator");
    let files = valid_tenant_files();
    assert!(files.len() >= 2, "examples/ holds at least two tenants");
    for path in files {
        for doc in documents(&path) {
            let violations = validator.validate(&doc);
            assert!(violations.is_empty(), "{}: {violations:?}", path.display());
            let tenant: HealthcareTenant =
                serde_json::from_value(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!tenant.spec.baa.reference.is_empty());
        }
    }
}

#[test]
fn examples_cover_issuer_and_secret_tls_and_several_sinks() {
    let tenants: Vec<HealthcareTenant> = valid_tenant_files()
        .iter()
        .flat_map(|p| documents(p))
        .map(|d| serde_json::from_value(d).expect("tenant"))
        .collect();
    assert!(tenants.iter().any(|t| t.spec.tls.issuer_ref.is_some()));
    assert!(tenants.iter().any(|t| t.spec.tls.secret_name.is_some()));
    assert!(tenants.iter().any(|t| t.spec.audit.sinks.len() >= 3));
}

#[test]
fn every_invalid_example_is_refused_with_its_expected_message() {
    let validator = TenantValidator::new().expect("validator");
    let files = invalid_tenant_files();
    assert!(files.len() >= 20, "one invalid example per rule");
    for path in files {
        let expected = expected_violations(&path);
        assert!(
            !expected.is_empty(),
            "{}: no `# expect:` header",
            path.display()
        );
        let violations = violations_of(&validator, &path);
        for (field, message) in expected {
            assert!(
                violations
                    .iter()
                    .any(|v| v.path == field && v.message.starts_with(&message)),
                "{}: expected `{field}: {message}...`, got:\n{}",
                path.display(),
                violations
                    .iter()
                    .map(|v| format!("  {v}\n"))
                    .collect::<String>()
            );
        }
    }
}

#[test]
fn an_unchanged_update_and_a_renewed_agreement_pass_the_transition_rules() {
    let validator = TenantValidator::new().expect("validator");
    let old = documents(&examples_dir().join("mercy-clinic.yaml")).remove(0);
    assert!(validator.validate_update(&old, &old).is_empty());

    let mut renewed = old.clone();
    renewed["spec"]["baa"]["reference"] = "BAA-2029-0007".into();
    renewed["spec"]["baa"]["signedOn"] = "2029-01-10".into();
    renewed["spec"]["baa"]["expiresOn"] = "2032-01-09".into();
    let violations = validator.validate_update(&renewed, &old);
    assert!(
        violations.is_empty(),
        "a renewal is a new reference with a new date: {violations:?}"
    );
}

#[test]
fn omitted_locked_settings_are_defaulted_then_accepted() {
    let validator = TenantValidator::new().expect("validator");
    let mut tenant = documents(&examples_dir().join("mercy-clinic.yaml")).remove(0);
    tenant["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("meetings");
    assert!(validator.validate(&tenant).is_empty());
}

#[test]
fn non_objects_and_wrong_kinds_are_refused_not_panicked_on() {
    let validator = TenantValidator::new().expect("validator");
    assert!(
        !validator
            .validate(&Value::String("hello".into()))
            .is_empty()
    );
    let wrong =
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let paths: Vec<String> = validator
        .validate(&wrong)
        .into_iter()
        .map(|v| v.path)
        .collect();
    assert!(paths.contains(&"apiVersion".to_string()) && paths.contains(&"kind".to_string()));
}
