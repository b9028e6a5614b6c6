//! The committed CRD is what the types generate: platform teams apply the file, the operator
//! trusts the types, and the two must never disagree.

use std::path::Path;

/// Each committed CRD file and what the types generate for it.
fn crds() -> [(&'static str, String); 2] {
    [
        ("healthcaretenant.yaml", bedside_crds::crd_yaml()),
        ("breakglass.yaml", bedside_crds::break_glass_crd_yaml()),
    ]
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    for (file, generated) in crds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale: regenerate it with `make crd` and commit it",
            path.display()
        );
    }
}

#[test]
fn the_chart_carries_the_same_crd() {
    for (file, generated) in crds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/bedside/crds")
            .join(file);
        let in_chart = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            in_chart == generated,
            "{} is stale: run `make crd` and commit it",
            path.display()
        );
    }
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
