//! The operator's side of the audit trail, against a real API server and a real rsyslog on
//! loopback: its own records (provisioned, drift reverted, deprovisioned) reach the tenant's
//! sink in a chain that verifies, and AuditSinksReady follows what a real media node reports
//! on `/audit/health`.
//!
//! There is no kubelet: the media node runs in this process and the test writes a Pod object
//! for it, whose status (Running, podIP 127.0.0.1) the test sets itself.

use std::time::Duration;

use bedside_crds::HealthcareTenant;
use bedside_crds::node_config::AuditSinkSettings;
use bedside_tests::media::TestNode;
use bedside_tests::operator::{
    RunningOperator, create_lakeside_tenant, ensure_namespace, eventually, install_crd,
    media_pod_object, patch_tenant_spec,
};
use bedside_tests::rsyslog::{self, Rsyslog};
use bedside_tests::{ClusterOptions, TestCluster};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

const NS: &str = "tenant-audit";
const TENANT: &str = "lakeside-behavioral";
const WAIT: Duration = Duration::from_secs(30);

async fn condition(cluster: &TestCluster, type_: &str) -> Option<(String, String, String)> {
    bedside_tests::operator::tenant_condition(&cluster.client(), NS, TENANT, type_).await
}

/// The sink's messages that are records of `action`.
fn records_of(sink: &Rsyslog, action: &str) -> Vec<Value> {
    sink.received()
        .into_iter()
        .filter_map(|(_, m)| serde_json::from_str::<Value>(&m).ok())
        .filter(|r| r["action"] == action)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_own_records_reach_the_tenants_sink_and_nodes_report_their_sinks() {
    if !bedside_tests::run_or_skip("rsyslog", rsyslog::unavailable(), "BEDSIDE_REQUIRE_TOOLS") {
        return;
    }
    let Some(cluster) = TestCluster::start_or_skip(ClusterOptions::default()).await else {
        return;
    };
    install_crd(&cluster).await.expect("install the CRD");
    ensure_namespace(&cluster, NS).await.expect("namespace");
    let sink_dir = tempfile::tempdir().expect("tempdir");
    let sink = Rsyslog::start(sink_dir.path()).await;

    let ca = std::fs::read_to_string(&sink.ca_file).expect("ca");
    let sinks = json!([
        {"stdout": {}},
        {"syslog": {"address": format!("127.0.0.1:{}", sink.port), "caSecret": "siem-ca"}},
    ]);
    create_lakeside_tenant(&cluster, NS, &ca, sinks).await;
    let tenants: Api<HealthcareTenant> = Api::namespaced(cluster.client(), NS);
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), NS);
    let operator = RunningOperator::start(&cluster, "op-audit", false)
        .await
        .expect("operator");

    // Provisioned: on record, by the operator, authenticated by Kubernetes.
    let provisioned = eventually("a tenant-provisioned record at the sink", WAIT, || async {
        records_of(&sink, "tenant-provisioned").into_iter().next()
    })
    .await;
    assert_eq!(provisioned["actor"]["role"], "operator", "{provisioned}");
    assert_eq!(provisioned["actor"]["auth"], "kubernetes", "{provisioned}");
    assert_eq!(provisioned["place"]["node"], "op-audit", "{provisioned}");
    assert_eq!(provisioned["tenant"], TENANT, "{provisioned}");

    // An edit that turns recording on is reverted, and that is on record too.
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client(), NS);
    let name = "lakeside-behavioral-media-config";
    // Provisioning is recorded when the keys exist; the children follow a moment later.
    let cm = eventually("the config ConfigMap", WAIT, || async {
        configmaps.get_opt(name).await.ok().flatten()
    })
    .await;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("config.yaml"))
        .cloned()
        .unwrap_or_default();
    configmaps
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.yaml": text.replace("recording: Disabled", "recording: Enabled")}})),
        )
        .await
        .expect("edit");
    let reverted = eventually("a drift-reverted record", WAIT, || async {
        records_of(&sink, "drift-reverted").into_iter().next()
    })
    .await;
    assert_eq!(
        reverted["outcome"]["reason"], "configmap-locked-setting",
        "{reverted}"
    );

    // A media node whose syslog sink is unreachable: the operator reads its /audit/health.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let ca_file = sink.ca_file.clone();
    let node = TestNode::start_with(move |c| {
        c.audit.sinks.push(AuditSinkSettings::Syslog {
            address: format!("127.0.0.1:{closed_port}"),
            ca_file,
        });
    })
    .await;
    media_pod_object(&cluster, NS, TENANT, node.metrics_addr.port()).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let (_, _, message) = eventually(
        "AuditSinksReady=False from the node",
        Duration::from_secs(60),
        || async {
            condition(&cluster, "AuditSinksReady")
                .await
                .filter(|(s, r, _)| s == "False" && r == "SinkDown")
        },
    )
    .await;
    assert!(
        message.contains("lakeside-behavioral-media-0: sink 1 (syslog) is down (unreachable)"),
        "{message}"
    );

    // The node goes away; the operator's own delivery to the same sink is healthy.
    pods.delete(
        "lakeside-behavioral-media-0",
        &DeleteParams::default().grace_period(0),
    )
    .await
    .expect("delete the pod");
    let (_, _, message) = eventually("AuditSinksReady=True", Duration::from_secs(60), || async {
        condition(&cluster, "AuditSinksReady")
            .await
            .filter(|(s, _, _)| s == "True")
    })
    .await;
    assert!(message.contains("1 reporter(s)"), "{message}");

    // The first status put the BAA in force: a baa-state-change the operator really emits.
    let in_force = eventually("a baa-state-change record", WAIT, || async {
        records_of(&sink, "baa-state-change").into_iter().next()
    })
    .await;
    assert_eq!(in_force["outcome"]["result"], "success", "{in_force}");
    assert!(in_force["outcome"].get("reason").is_none(), "{in_force}");
    // The platform team records that the agreement ended: a settings change, and the BAA's
    // end stops the service, on record with the operator's own reason.
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        json!({"baa": {"expiresOn": "2025-12-31"}}),
        "the BAA ended",
    )
    .await;
    let changed = eventually("a settings-change record", WAIT, || async {
        records_of(&sink, "settings-change").into_iter().next()
    })
    .await;
    assert_eq!(changed["outcome"]["result"], "success", "{changed}");
    let expired = eventually("the BAA's end on record", WAIT, || async {
        records_of(&sink, "baa-state-change")
            .into_iter()
            .find(|r| r["outcome"]["result"] == "failure")
    })
    .await;
    assert_eq!(
        expired["outcome"]["reason"], "agreement-expired",
        "{expired}"
    );

    // Deprovisioned: the record reaches the sink before the tenant is gone, and what the sink
    // holds from the operator is one intact chain that ends cleanly.
    let key = secrets
        .get("lakeside-behavioral-keys")
        .await
        .expect("keys")
        .data
        .and_then(|mut d| d.remove("audit-hmac.key"))
        .expect("audit key")
        .0;
    tenants
        .delete(TENANT, &DeleteParams::default())
        .await
        .expect("delete the tenant");
    eventually("the tenant gone", WAIT, || async {
        tenants
            .get_opt(TENANT)
            .await
            .ok()
            .and_then(|t| t.is_none().then_some(()))
    })
    .await;
    assert_eq!(
        records_of(&sink, "tenant-deprovisioned").len(),
        1,
        "the deprovisioning is at the sink before the tenant is gone"
    );
    let operator_lines: Vec<String> = sink
        .received()
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.contains("\"node\":\"op-audit\""))
        .collect();
    let verified = eventually("the closing record at the sink", WAIT, || async {
        let lines: Vec<String> = sink
            .received()
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.contains("\"node\":\"op-audit\""))
            .collect();
        let key = bedside_audit::AuditKey::new(&key).expect("key");
        bedside_audit::verify(lines.iter().map(String::as_str), &key)
            .ok()
            .filter(|v| v.chains.first().is_some_and(|c| c.closed))
    })
    .await;
    assert_eq!(verified.chains.len(), 1, "{verified:?}");
    assert_eq!(verified.chains[0].first_seq, Some(1), "{operator_lines:#?}");
    drop(node);
    operator.stop().await.expect("the operator stops");
}
