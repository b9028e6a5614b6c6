//! The HealthcareTenant CRD in a real kube-apiserver (v1.20.2 on loopback, or the newer cluster
//! `BEDSIDE_TEST_KUBECONFIG` names): it installs, the examples are accepted with the locked
//! defaults filled in, and the schema's rules reject what they should with the field named.
//!
//! v1.20 cannot run CEL; on it the CEL-only examples are accepted (and proven refused in
//! `examples_offline.rs`). On 1.25 and later every invalid example must be rejected here too.

use std::time::Duration;

use bedside_crds::HealthcareTenant;
use bedside_tests::examples::{
    documents, examples_dir, invalid_tenant_files, is_update, rejected_by_schema_at,
    valid_tenant_files,
};
use bedside_tests::operator::{ensure_namespace, install_crd};
use bedside_tests::{ClusterOptions, TestCluster};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The first minor version whose API server runs CRD validation rules (beta in 1.25).
const FIRST_MINOR_WITH_CEL: u32 = 25;

async fn cluster_with_crd() -> Option<TestCluster> {
    let cluster = TestCluster::start_or_skip(ClusterOptions::default()).await?;
    install_crd(&cluster).await.expect("install the CRD");
    Some(cluster)
}

fn tenants(cluster: &TestCluster, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<HealthcareTenant>(&());
    Api::namespaced_with(cluster.client(), namespace, &resource)
}

async fn create(cluster: &TestCluster, doc: &Value) -> Result<DynamicObject, kube::Error> {
    let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    ensure_namespace(cluster, namespace)
        .await
        .expect("namespace");
    let object: DynamicObject = serde_json::from_value(doc.clone()).expect("an object");
    tenants(cluster, namespace)
        .create(&PostParams::default(), &object)
        .await
}

fn without_indices(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if close > 0 && after[..close].bytes().all(|b| b.is_ascii_digit()) => {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn example_tenants_are_accepted_with_locked_defaults_filled_in() {
    let Some(cluster) = cluster_with_crd().await else {
        return;
    };
    for path in valid_tenant_files() {
        for doc in documents(&path) {
            let created = create(&cluster, &doc)
                .await
                .unwrap_or_else(|e| panic!("{}: the API server refused it: {e}", path.display()));
            let meetings = &created.data["spec"]["meetings"];
            assert_eq!(meetings["recording"], "Disabled", "{}", path.display());
            assert_eq!(
                meetings["chatPersistence"],
                "Disabled",
                "{}",
                path.display()
            );
            assert_eq!(meetings["waitingRoom"], "Enabled", "{}", path.display());
            assert_eq!(meetings["passcode"], "Required", "{}", path.display());
            // The stored object still reads as our type, as the operator will read it.
            let typed: HealthcareTenant =
                serde_json::from_value(serde_json::to_value(&created).expect("json"))
                    .unwrap_or_else(|e| {
                        panic!(
                            "{}: stored tenant does not deserialize: {e}",
                            path.display()
                        )
                    });
            assert!(typed.spec.audit.retention_days >= 2190);
        }
    }
    // The example that omits idleTimeout's neighbours keeps its own value and gets defaults
    // for the rest.
    let lakeside = tenants(&cluster, "tenant-lakeside")
        .get("lakeside-behavioral")
        .await
        .expect("stored");
    assert_eq!(lakeside.data["spec"]["meetings"]["idleTimeout"], "10m");
    assert_eq!(
        lakeside.data["spec"]["meetings"]["mediaEncryption"],
        "EndToEnd"
    );
    assert_eq!(lakeside.data["spec"]["audit"]["retentionDays"], 3650);
}

#[tokio::test]
async fn invalid_tenants_are_rejected_by_the_schema_naming_the_field() {
    let Some(cluster) = cluster_with_crd().await else {
        return;
    };
    let runs_cel = cluster.minor_version().await.expect("server version") >= FIRST_MINOR_WITH_CEL;
    let mut schema_rejections = 0;
    for path in invalid_tenant_files() {
        let docs = documents(&path);
        if is_update(&path) {
            if runs_cel {
                create(&cluster, &docs[0])
                    .await
                    .expect("the stored object is valid");
                let namespace = docs[1]["metadata"]["namespace"]
                    .as_str()
                    .expect("namespace");
                let name = docs[1]["metadata"]["name"].as_str().expect("name");
                let patch = Patch::Merge(json!({"spec": docs[1]["spec"]}));
                let result = tenants(&cluster, namespace)
                    .patch(name, &PatchParams::default(), &patch)
                    .await;
                assert!(result.is_err(), "{}: update accepted", path.display());
            }
            continue;
        }
        let result = create(&cluster, &docs[0]).await;
        match (rejected_by_schema_at(&path), result) {
            (Some(field), Err(kube::Error::Api(status))) => {
                schema_rejections += 1;
                assert_eq!(status.code, 422, "{}: {}", path.display(), status.message);
                // 1.20 prints list paths without indices (spec.audit.sinks.syslog), newer
                // servers with them (spec.audit.sinks[0].syslog); compare without.
                assert!(
                    without_indices(&status.message).contains(&without_indices(&field)),
                    "{}: the rejection should name {field}: {}",
                    path.display(),
                    status.message
                );
            }
            (Some(field), other) => panic!(
                "{}: the schema should reject it at {field}, got {other:?}",
                path.display()
            ),
            (None, Err(kube::Error::Api(status))) if runs_cel => {
                assert_eq!(status.code, 422, "{}: {}", path.display(), status.message);
            }
            (None, Ok(created)) if !runs_cel => {
                // Accepted only because this server cannot run CEL; the operator's renderer
                // and the media node still refuse to unlock anything.
                let namespace = created.metadata.namespace.clone().expect("namespace");
                let name = created.metadata.name.clone().expect("name");
                tenants(&cluster, &namespace)
                    .delete(&name, &DeleteParams::default())
                    .await
                    .expect("clean up");
            }
            (None, other) => panic!("{}: unexpected result {other:?}", path.display()),
        }
    }
    assert!(
        schema_rejections >= 15,
        "only {schema_rejections} schema rejections"
    );
}

#[tokio::test]
async fn status_conditions_from_two_field_managers_merge_by_type() {
    let Some(cluster) = cluster_with_crd().await else {
        return;
    };
    let doc = documents(&examples_dir().join("mercy-clinic.yaml")).remove(0);
    create(&cluster, &doc).await.expect("create");
    let api = tenants(&cluster, "tenant-mercy");
    let condition = |type_: &str| {
        json!({"type": type_, "status": "True", "reason": "Test", "message": "set by a test",
               "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 1})
    };
    for (manager, type_) in [
        ("bedside-operator", "Ready"),
        ("bedside-audit", "AuditSinksReady"),
    ] {
        let patch = json!({
            "apiVersion": "bedside.health/v1alpha1", "kind": "HealthcareTenant",
            "status": {"conditions": [condition(type_)]}
        });
        api.patch_status(
            "mercy-clinic",
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap_or_else(|e| panic!("{manager} applies status: {e}"));
    }
    let stored = api.get_status("mercy-clinic").await.expect("get status");
    let mut types: Vec<String> = stored.data["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["type"].as_str().map(str::to_string))
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["AuditSinksReady", "Ready"],
        "conditions must merge by type"
    );
}

#[tokio::test]
async fn kubectl_shows_the_printer_columns_and_explains_the_locked_fields() {
    let missing = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
        .then(|| {
            "kubectl is not installed (scripts/test-deps.sh installs kubernetes-client where Debian has it)"
                .to_string()
        });
    if !bedside_tests::run_or_skip("the kubectl checks", missing, "BEDSIDE_REQUIRE_TOOLS") {
        return;
    }
    let Some(cluster) = cluster_with_crd().await else {
        return;
    };
    let doc = documents(&examples_dir().join("mercy-clinic.yaml")).remove(0);
    create(&cluster, &doc).await.expect("create");

    let output = cluster
        .kubectl()
        .args(["get", "hct", "-n", "tenant-mercy"])
        .output()
        .expect("run kubectl");
    let table = String::from_utf8_lossy(&output.stdout);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "BAA",
            "NODES",
            "COMPLIANT",
            "FAILING",
            "AGE"
        ],
        "{table}"
    );
    assert!(table.contains("mercy-clinic"), "{table}");

    // `kubectl explain` reads the published OpenAPI, which can lag the CRD by a moment.
    let mut explained = String::new();
    for _ in 0..50 {
        let output = cluster
            .kubectl()
            .args(["explain", "healthcaretenant.spec.meetings"])
            .output()
            .expect("run kubectl");
        explained = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && explained.contains("recording") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(explained.contains("Locked to Disabled"), "{explained}");
    assert!(explained.contains("Automatic logoff"), "{explained}");
}
