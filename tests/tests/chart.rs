//! The install path: the Helm chart linted and rendered by the Helm 4 engine (helm-python-sdk),
//! bad values refused by its schema, every rendered object valid for Kubernetes 1.30 and the
//! newest schema, the plain manifests in deploy/ equal to the chart's default render, and the
//! chart applied to a real API server where the operator, running as the chart's own
//! ServiceAccount with exactly the chart's RBAC, reconciles an example tenant.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use bedside_crds::HealthcareTenant;
use bedside_tests::examples::{documents, examples_dir};
use bedside_tests::operator::{
    RunningOperator, ensure_namespace, eventually, install_thirdparty_crds,
};
use bedside_tests::repo_root as repo;
use bedside_tests::{ClusterOptions, TestCluster};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use serde_json::{Value, json};

const RELEASE_NAMESPACE: &str = "bedside-system";
const ALL_OPTIONS: &str = r#"{"monitoring":{"serviceMonitor":{"enabled":true},"prometheusRule":{"enabled":true},"dashboard":{"enabled":true}},"admissionPolicy":{"enabled":true}}"#;

/// helm-python-sdk and kubernetes-validate, or a skip (a failure with BEDSIDE_REQUIRE_TOOLS=1).
fn tools_or_skip() -> bool {
    let helm = Command::new("python3")
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    let validate = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = (!(helm && validate)).then(|| {
        "pip install helm-python-sdk kubernetes-validate (scripts/test-deps.sh does it)".to_string()
    });
    bedside_tests::run_or_skip("chart tools", missing, "BEDSIDE_REQUIRE_TOOLS")
}

/// The chart rendered with `values` (JSON), or Helm's error message.
fn render(values: &str) -> Result<String, String> {
    let out = Command::new("python3")
        .arg(repo().join("tests/scripts/render_chart.py"))
        .arg(repo().join("charts/bedside"))
        .args([
            "--lint",
            "--values",
            values,
            "--namespace",
            RELEASE_NAMESPACE,
        ])
        .output()
        .expect("run render_chart.py");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// The rendered objects; a document that is not YAML fails the test, naming it (empty
/// documents, as Helm leaves between templates, are skipped).
fn objects(stream: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(stream)
        .enumerate()
        .filter_map(|(i, d)| {
            let v: Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("rendered document {} is not YAML: {e}", i + 1));
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_chart_renders_by_default_and_with_every_option() {
    if !tools_or_skip() {
        return;
    }
    let default = objects(&render("{}").expect("default values render"));
    let expected: BTreeSet<String> = [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds(&default), expected);

    let deployment = default
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2, "leader election pair");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        container["image"], "ghcr.io/bedside-health/bedside-operator:0.1.0",
        "the image the Containerfile builds, at the chart's appVersion"
    );

    // Each option alone adds exactly its objects.
    for (values, added) in [
        (
            r#"{"monitoring":{"serviceMonitor":{"enabled":true}}}"#,
            vec!["ServiceMonitor"],
        ),
        (
            r#"{"monitoring":{"prometheusRule":{"enabled":true}}}"#,
            vec!["PrometheusRule"],
        ),
        (
            r#"{"monitoring":{"dashboard":{"enabled":true}}}"#,
            vec!["ConfigMap"],
        ),
        (
            r#"{"admissionPolicy":{"enabled":true}}"#,
            vec![
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            ],
        ),
    ] {
        let with = kinds(&objects(&render(values).expect(values)));
        let extra: Vec<&String> = with.difference(&expected).collect();
        assert_eq!(extra, added.iter().collect::<Vec<_>>(), "{values}");
    }

    let all = objects(&render(ALL_OPTIONS).expect("every option renders"));
    for kind in [
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds(&all).contains(kind), "{kind} with every option on");
    }
    // The PrometheusRule and the dashboard carry the monitoring files unchanged.
    let rule = all
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("rule");
    let alerts: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/bedside/monitoring/alerts.yaml"))
            .expect("alerts"),
    )
    .expect("alerts YAML");
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);
    let dashboard = all
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("dashboard");
    let shipped: Value = serde_json::from_str(
        dashboard["data"]["bedside.json"]
            .as_str()
            .unwrap_or_default(),
    )
    .expect("dashboard JSON in the ConfigMap");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("charts/bedside/monitoring/dashboards/bedside.json"))
            .expect("dashboard file"),
    )
    .expect("dashboard JSON");
    assert_eq!(shipped, file);
}

#[test]
fn bad_values_are_refused_at_install_with_the_field() {
    if !tools_or_skip() {
        return;
    }
    for (values, field) in [
        (r#"{"operator":{"replicas":0}}"#, "/operator/replicas"),
        (r#"{"operater":{}}"#, "operater"),
        (
            r#"{"monitoring":{"serviceMonitor":{"interval":"soon"}}}"#,
            "/monitoring/serviceMonitor/interval",
        ),
        (
            r#"{"operator":{"image":{"pullPolicy":"Sometimes"}}}"#,
            "pullPolicy",
        ),
        (
            r#"{"admissionPolicy":{"enabled":"yes"}}"#,
            "/admissionPolicy/enabled",
        ),
    ] {
        let err = render(values).expect_err(values);
        assert!(err.contains(field), "{values}: {err}");
    }
}

#[test]
fn the_charts_roles_are_the_operators_own_and_tenant_namespaces_narrow_where_it_writes() {
    if !tools_or_skip() {
        return;
    }
    use bedside_operator::rbac;
    let rendered = objects(&render("{}").expect("render"));
    let named = |kind: &str, name: &str| {
        rendered
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
            .clone()
    };
    for (kind, own) in [
        ("ClusterRole", serde_json::to_value(rbac::cluster_role())),
        ("ClusterRole", serde_json::to_value(rbac::tenant_role())),
        ("Role", serde_json::to_value(rbac::leader_role("default"))),
    ] {
        let own = own.expect("rbac");
        let name = own["metadata"]["name"].as_str().expect("a name");
        assert_eq!(
            named(kind, name)["rules"],
            own["rules"],
            "chart RBAC == `bedside-operator rbac` for {kind} {name}"
        );
    }
    // By default the operator writes in every namespace ...
    let tenant_binding = named("ClusterRoleBinding", "bedside-operator-tenant");
    assert_eq!(tenant_binding["roleRef"]["name"], rbac::TENANT_ROLE);
    // ... and with tenantNamespaces only in those.
    let narrowed = objects(
        &render(r#"{"operator": {"tenantNamespaces": ["clinic-a", "clinic-b"]}}"#).expect("render"),
    );
    let writes: Vec<String> = narrowed
        .iter()
        .filter(|o| o["roleRef"]["name"] == rbac::TENANT_ROLE)
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str().unwrap_or("<cluster>")
            )
        })
        .collect();
    assert_eq!(writes, ["RoleBinding clinic-a", "RoleBinding clinic-b"]);
    assert!(
        render(r#"{"operator": {"tenantNamespaces": ["Clinic_A"]}}"#).is_err(),
        "a namespace name is checked by the values schema"
    );
}

#[test]
fn every_rendered_object_is_valid_for_kubernetes_1_30_and_the_newest() {
    if !tools_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Custom resources (ServiceMonitor, PrometheusRule) have no schema here; the API-server
    // test and the monitoring suite cover them.
    let core: Vec<Value> = objects(&render(ALL_OPTIONS).expect("render"))
        .into_iter()
        .filter(|o| {
            !o["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .contains("coreos.com")
        })
        .collect();
    let file = dir.path().join("core.yaml");
    let text: Vec<String> = core
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("yaml"))
        .collect();
    std::fs::write(&file, text.join("---\n")).expect("write");
    for version in ["1.30.0", "1.37.0"] {
        // As a module: pip's console scripts are not always on PATH (pyenv shims, --user).
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .arg(&file)
            .output()
            .expect("kubernetes-validate");
        let log = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{version}:\n{log}");
        assert_eq!(
            log.matches("passed").count(),
            core.len(),
            "every object checked against {version}:\n{log}"
        );
    }
}

#[test]
fn the_plain_manifests_are_the_charts_default_render() {
    if !tools_or_skip() {
        return;
    }
    let committed =
        std::fs::read_to_string(repo().join("deploy/bedside.yaml")).expect("deploy/bedside.yaml");
    let rendered = render("{}").expect("render");
    assert!(
        committed == rendered,
        "deploy/bedside.yaml is stale: run `make manifests`"
    );
}

#[tokio::test]
async fn the_chart_installs_on_a_real_api_server_and_its_operator_reconciles_a_tenant() {
    if !tools_or_skip() {
        return;
    }
    let Some(cluster) = TestCluster::start_or_skip(ClusterOptions::default()).await else {
        return;
    };
    let admin = cluster.client();
    ensure_namespace(&cluster, RELEASE_NAMESPACE)
        .await
        .expect("release namespace");
    let rendered = objects(&render(ALL_OPTIONS).expect("render"));
    // With the real prometheus-operator CRDs installed, the ServiceMonitor and PrometheusRule
    // must apply too.
    let monitoring_crds = install_thirdparty_crds(&cluster)
        .await
        .expect("third-party CRDs");

    // CRDs first (as Helm does), then everything else, by server-side apply.
    let apply = PatchParams::apply("helm").force();
    let mut skipped = Vec::new();
    for pass in ["CustomResourceDefinition", "rest"] {
        let discovery = Discovery::new(admin.clone())
            .run()
            .await
            .expect("discovery");
        for object in &rendered {
            let is_crd = object["kind"] == "CustomResourceDefinition";
            if (pass == "CustomResourceDefinition") != is_crd {
                continue;
            }
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let kind = object["kind"].as_str().unwrap_or_default();
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let Some((resource, caps)) = discovery.resolve_gvk(&gvk) else {
                skipped.push(format!("{kind} ({api_version})"));
                continue;
            };
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let api: Api<DynamicObject> = match caps.scope {
                kube::discovery::Scope::Namespaced => {
                    Api::namespaced_with(admin.clone(), RELEASE_NAMESPACE, &resource)
                }
                kube::discovery::Scope::Cluster => Api::all_with(admin.clone(), &resource),
            };
            if is_crd {
                // Helm creates CRDs (crds/ is never templated or patched), as does 1.20's
                // kubectl: server-side apply there rejects the CEL fields it does not know.
                let crd: DynamicObject =
                    serde_json::from_value(object.clone()).expect("CRD object");
                api.create(&PostParams::default(), &crd)
                    .await
                    .unwrap_or_else(|e| panic!("create {kind}/{name}: {e}"));
            } else {
                api.patch(name, &apply, &Patch::Apply(object))
                    .await
                    .unwrap_or_else(|e| panic!("apply {kind}/{name}: {e}"));
            }
        }
        if pass == "CustomResourceDefinition" {
            tokio::time::sleep(Duration::from_secs(2)).await; // CRD established
        }
    }
    eprintln!("not served by this API server, skipped: {skipped:?}");
    for s in &skipped {
        let allowed: &[&str] = if monitoring_crds {
            &["ValidatingAdmissionPolicy"]
        } else {
            &[
                "ServiceMonitor",
                "PrometheusRule",
                "ValidatingAdmissionPolicy",
            ]
        };
        assert!(
            allowed.iter().any(|k| s.starts_with(k)),
            "only kinds this API server lacks may be skipped: {s}"
        );
    }

    // The operator, as the chart's ServiceAccount with the chart's RBAC, and nothing else.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), RELEASE_NAMESPACE);
    let token: Value = accounts
        .create_subresource(
            "token",
            "bedside-operator",
            &PostParams::default(),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": 3600}}),
        )
        .await
        .expect("a token for the chart's ServiceAccount");
    let client = cluster
        .client_with_token(token["status"]["token"].as_str().expect("token"))
        .await
        .expect("client");
    let operator = RunningOperator::start_with_client(client, "chart-op", Some(RELEASE_NAMESPACE))
        .expect("operator");

    // An example tenant, with its TLS Secret.
    let namespace = "tenant-lakeside";
    ensure_namespace(&cluster, namespace).await.expect("ns");
    let cert = rcgen::generate_simple_self_signed(vec!["telehealth.lakeside.example".into()])
        .expect("cert");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "lakeside-meet-tls", "namespace": namespace},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert.cert.pem(), "tls.key": cert.signing_key.serialize_pem()},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("TLS secret");
    let tenant: HealthcareTenant = serde_json::from_value(
        documents(&examples_dir().join("lakeside-behavioral.yaml")).remove(0),
    )
    .expect("tenant");
    let tenants: Api<HealthcareTenant> = Api::namespaced(admin.clone(), namespace);
    tenants
        .create(&PostParams::default(), &tenant)
        .await
        .expect("create the tenant");

    let configs: Api<ConfigMap> = Api::namespaced(admin.clone(), namespace);
    let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), namespace);
    eventually(
        "children made with the chart's RBAC",
        Duration::from_secs(60),
        || async {
            let config = configs.get("lakeside-behavioral-media-config").await.ok()?;
            let nodes = sets.get("lakeside-behavioral-media").await.ok()?;
            Some((config, nodes))
        },
    )
    .await;
    let status = eventually("a status written", Duration::from_secs(30), || async {
        let t = tenants.get("lakeside-behavioral").await.ok()?;
        let status = t.status?;
        (!status.conditions.is_empty()).then_some(status)
    })
    .await;
    let settings = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SettingsLocked")
        .expect("SettingsLocked condition");
    assert_eq!(settings.status, "True", "{settings:?}");
    operator.stop().await.expect("the operator stops cleanly");
}
