//! The tenant's live compliance evidence against a real API server serving the real
//! OpenReports CRD, with a real media node answering `/evidence` (in this process; the test
//! writes its Pod object and sets its status, as there is no kubelet): the Report and the
//! tenant's status flip when the state they describe changes.
//!
//! - a sink that is stopped: 164.312(b) fails, naming the pod and the sink (the operator's own
//!   delivery to the same sink keeps it looking every few seconds, as running nodes' reports
//!   do on a real cluster, where a pod becoming ready also wakes it through its StatefulSet);
//! - a certificate ending in 5 days: 164.312(e)(1) warns; renewed, it passes;
//! - a record waiting in the node's buffer edited on its disk: 164.312(c)(1) fails, naming it;
//! - what no software can check is listed as manual (`skip`), never as passed.

use std::time::Duration;

use bedside_crds::HealthcareTenant;
use bedside_crds::node_config::{AuditSinkSettings, MediaNodeConfig};
use bedside_tests::examples::{documents, examples_dir};
use bedside_tests::media::TestNode;
use bedside_tests::operator::{
    RunningOperator, ensure_namespace, eventually, install_crd, install_thirdparty_crds,
    media_pod_object,
};
use bedside_tests::{ClusterOptions, TestCluster};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

const NS: &str = "tenant-evidence";
const TENANT: &str = "lakeside-behavioral";
const REPORT: &str = "lakeside-behavioral-hipaa";
/// Generous: the whole suite runs beside it on 2 cores.
const WAIT: Duration = Duration::from_secs(120);

/// A self-signed certificate for the tenant's name that ends `days` from now.
fn certificate(days: i64) -> (String, String) {
    let end = jiff::Zoned::now()
        .checked_add(jiff::Span::new().days(days))
        .expect("a date");
    let mut params =
        rcgen::CertificateParams::new(vec!["telehealth.lakeside.example".into()]).expect("params");
    params.not_after = rcgen::date_time_ymd(
        i32::from(end.year()),
        u8::try_from(end.month()).expect("a month"),
        u8::try_from(end.day()).expect("a day"),
    );
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = params.self_signed(&key).expect("a certificate");
    (cert.pem(), key.serialize_pem())
}

fn tls_secret(days: i64) -> Secret {
    let (crt, key) = certificate(days);
    serde_json::from_value(json!({
        "metadata": {"name": "lakeside-meet-tls"}, "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": crt, "tls.key": key},
    }))
    .expect("secret")
}

/// The result the Report holds for `rule`, once `accept` takes it.
async fn result_where(
    reports: &Api<DynamicObject>,
    rule: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    let mut last = Value::Null;
    loop {
        let report = reports.get_opt(REPORT).await.ok().flatten();
        let found = report.as_ref().and_then(|r| {
            r.data
                .get("results")?
                .as_array()?
                .iter()
                .find(|r| r["rule"] == rule)
                .cloned()
        });
        if let Some(found) = found {
            if accept(&found) {
                return found;
            }
            last = found;
        }
        assert!(
            started.elapsed() < WAIT,
            "the Report's {rule} is not as expected within {WAIT:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compliance_report_follows_the_sinks_the_certificate_and_the_records_at_rest() {
    let Some(cluster) = TestCluster::start_or_skip(ClusterOptions::default()).await else {
        return;
    };
    install_crd(&cluster).await.expect("install the CRD");
    if !install_thirdparty_crds(&cluster).await.expect("the CRDs") {
        return;
    }
    ensure_namespace(&cluster, NS).await.expect("namespace");
    // The tenant's SIEM is stopped (a closed port), for the operator's own records and the
    // node's: both wait in their buffers. Its CA: any certificate will do, nothing answers.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let ca_pem = certificate(30).0;
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), NS);
    let siem_ca: Secret = serde_json::from_value(
        json!({"metadata": {"name": "siem-ca"}, "stringData": {"ca.crt": ca_pem.clone()}}),
    )
    .expect("secret");
    for secret in [tls_secret(5), siem_ca] {
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create a Secret");
    }
    let mut doc = documents(&examples_dir().join("lakeside-behavioral.yaml")).remove(0);
    doc["metadata"]["namespace"] = json!(NS);
    doc["spec"]["audit"]["sinks"] = json!([
        {"stdout": {}},
        {"syslog": {"address": format!("127.0.0.1:{closed_port}"), "caSecret": "siem-ca"}},
    ]);
    let tenant: HealthcareTenant = serde_json::from_value(doc).expect("tenant");
    let tenants: Api<HealthcareTenant> = Api::namespaced(cluster.client(), NS);
    tenants
        .create(&PostParams::default(), &tenant)
        .await
        .expect("create the tenant");
    let _operator = RunningOperator::start(&cluster, "op-evidence", false)
        .await
        .expect("operator");

    // The node runs the config the operator rendered, with the stopped sink.
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client(), NS);
    let rendered = eventually("the rendered config", WAIT, || async {
        let cm = configmaps
            .get_opt("lakeside-behavioral-media-config")
            .await
            .ok()
            .flatten()?;
        let text = cm.data?.get("config.yaml")?.clone();
        serde_yaml::from_str::<MediaNodeConfig>(&text).ok()
    })
    .await;
    let buffers = tempfile::tempdir().expect("tempdir");
    let buffer_dir = buffers.path().to_path_buf();
    let ca = tempfile::NamedTempFile::new().expect("a CA file");
    std::fs::write(ca.path(), ca_pem).expect("write the CA");
    let ca_file = ca.path().to_path_buf();
    let node = TestNode::start_with(move |c| {
        c.meetings.idle_timeout = rendered.meetings.idle_timeout;
        c.audit.buffer_dir = buffer_dir;
        c.audit.sinks.push(AuditSinkSettings::Syslog {
            address: format!("127.0.0.1:{closed_port}"),
            ca_file,
        });
    })
    .await;
    media_pod_object(&cluster, NS, TENANT, node.metrics_addr.port()).await;

    let resource = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report"),
        "reports",
    );
    let reports: Api<DynamicObject> = Api::namespaced_with(cluster.client(), NS, &resource);

    // 164.312(b): the stopped sink fails, with the pod, the sink and what waits.
    // The node's report names it (the operator's own delivery to the same sink fails too).
    let sinks = result_where(&reports, "sinks-delivering", |r| {
        r["result"] == "fail"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("lakeside-behavioral-media-0: sink 1 (syslog) is down"))
    })
    .await;
    assert_eq!(sinks["policy"], "hipaa-164.312(b)", "{sinks}");
    assert_eq!(sinks["severity"], "critical", "{sinks}");

    // The node's own evidence: encryption and logoff pass, its chain verifies at rest.
    for rule in [
        "srtp-aes-256-gcm-only",
        "idle-timeout-in-force",
        "audit-chain-verified",
    ] {
        let found = result_where(&reports, rule, |r| r["result"] == "pass").await;
        assert_eq!(
            found["resources"][0]["name"], "lakeside-behavioral-media-0",
            "{found}"
        );
    }
    // 164.312(e)(1): five days left warns.
    let certificate = result_where(&reports, "certificate-valid", |r| r["result"] == "warn").await;
    assert!(
        certificate["message"]
            .as_str()
            .unwrap_or_default()
            .contains("within 14 days"),
        "{certificate}"
    );
    // Manual items: skip, with instructions, never pass.
    let emergency = result_where(&reports, "emergency-access", |_| true).await;
    assert_eq!(emergency["result"], "skip", "{emergency}");
    assert_eq!(emergency["properties"]["manual"], "true", "{emergency}");
    assert_eq!(emergency["scored"], false, "{emergency}");

    // The tenant's status sums it up for `kubectl get hct`.
    let status = eventually("Compliant=False in the status", WAIT, || async {
        let t = tenants.get_status(TENANT).await.ok()?;
        let status = serde_json::to_value(t.status?).ok()?;
        let compliant = status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Compliant")?
            .clone();
        (compliant["status"] == "False").then_some((status, compliant))
    })
    .await;
    let (status, compliant) = status;
    assert_eq!(compliant["reason"], "ControlsFailing", "{compliant}");
    assert!(
        compliant["message"]
            .as_str()
            .unwrap_or_default()
            .contains("164.312(b) sinks-delivering"),
        "{compliant}"
    );
    assert_eq!(status["compliance"]["manual"], 4, "{status}");
    assert_eq!(status["compliance"]["report"], REPORT, "{status}");
    assert!(status["compliance"]["fail"].as_u64() >= Some(1), "{status}");

    // Renewed, the certificate passes.
    secrets
        .replace("lakeside-meet-tls", &PostParams::default(), &tls_secret(90))
        .await
        .expect("renew the certificate");
    result_where(&reports, "certificate-valid", |r| r["result"] == "pass").await;

    // A record waiting for the stopped sink is edited on the node's disk.
    let buffer = std::fs::read_dir(buffers.path())
        .expect("the buffer dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .expect("the sink's buffer");
    let text = std::fs::read_to_string(&buffer).expect("buffered records");
    assert!(
        text.lines().count() >= 1,
        "records wait for the stopped sink"
    );
    let edited = text.replacen("\"node\":\"test-node\"", "\"node\":\"test-nodf\"", 1);
    assert_ne!(edited, text, "a record to edit: {text}");
    std::fs::write(&buffer, edited).expect("edit a record");
    let integrity = result_where(&reports, "audit-chain-verified", |r| r["result"] == "fail").await;
    let message = integrity["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("lakeside-behavioral-media-0: ")
            && message.contains("the buffer sink-1.jsonl"),
        "{integrity}"
    );
    drop(node);
}
