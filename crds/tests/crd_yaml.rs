//! The committed CRD is what the types generate: platform teams apply the file, the operator
//! trusts the types, and the two must never disagree.

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("healthcaretenant.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = bedside_crds::crd_yaml();
    assert!(
        committed == generated,
        "{} is stale: regenerate it with `make crd` (bedside-operator crd > crds/healthcaretenant.yaml) and commit it",
        path.display()
    );
}

#[test]
fn the_chart_carries_the_same_crd() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/bedside/crds/healthcaretenant.yaml");
    let in_chart = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        in_chart == bedside_crds::crd_yaml(),
        "{} is stale: run `make crd` and commit it",
        path.display()
    );
}

#[test]
fn committed_crd_yaml_parses_as_a_custom_resource_definition() {
    let text = bedside_crds::crd_yaml();
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_yaml::from_str(&text).expect("the CRD YAML is a CustomResourceDefinition");
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("healthcaretenants.bedside.health")
    );
}
