//! bedside-operator against a real API server (v1.20.2 on loopback, or the cluster
//! `BEDSIDE_TEST_KUBECONFIG` names), running as its own ServiceAccount with its own ClusterRole.
//! Every scenario asserts on live objects.
//!
//! There is no kubelet: pods never become ready by themselves, so where a scenario needs ready
//! media nodes it writes the StatefulSet's status itself and says so.

use std::time::Duration;

use bedside_crds::HealthcareTenant;
use bedside_tests::examples::{documents, examples_dir};
use bedside_tests::operator::{
    RunningOperator, counter_sum, ensure_namespace, eventually, install_crd,
    install_thirdparty_crds, operator_client, patch_tenant_spec, service_account_token,
};
use bedside_tests::{ClusterOptions, TestCluster};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

const NS: &str = "tenant-lakeside";
const TENANT: &str = "lakeside-behavioral";
const WAIT: Duration = Duration::from_secs(30);

async fn cluster(options: ClusterOptions) -> Option<TestCluster> {
    let cluster = TestCluster::start_or_skip(options).await?;
    install_crd(&cluster).await.expect("install the CRD");
    ensure_namespace(&cluster, NS).await.expect("namespace");
    Some(cluster)
}

/// The example tenant (secret-based TLS) and its TLS Secret, made now with a throwaway key.
async fn create_tenant(cluster: &TestCluster, edit: impl FnOnce(&mut Value)) {
    let cert = rcgen::generate_simple_self_signed(vec!["telehealth.lakeside.example".into()])
        .expect("cert");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "lakeside-meet-tls", "namespace": NS},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert.cert.pem(), "tls.key": cert.signing_key.serialize_pem()},
    }))
    .expect("secret");
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), NS);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => panic!("create the TLS secret: {e}"),
    }
    let mut doc = documents(&examples_dir().join("lakeside-behavioral.yaml")).remove(0);
    edit(&mut doc);
    let tenant: HealthcareTenant = serde_json::from_value(doc).expect("tenant");
    tenants(cluster)
        .create(&PostParams::default(), &tenant)
        .await
        .expect("create the tenant");
}

fn tenants(cluster: &TestCluster) -> Api<HealthcareTenant> {
    Api::namespaced(cluster.client(), NS)
}

async fn get<K>(cluster: &TestCluster, name: &str) -> Option<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(cluster.client(), NS)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

fn config_text(cm: &ConfigMap) -> String {
    cm.data
        .as_ref()
        .and_then(|d| d.get("config.yaml"))
        .cloned()
        .unwrap_or_default()
}

fn config_hash(deployment: &StatefulSet) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("bedside.health/config-hash"))
        .cloned()
        .unwrap_or_default()
}

fn replicas(deployment: &StatefulSet) -> Option<i32> {
    deployment.spec.as_ref().and_then(|s| s.replicas)
}

async fn condition(cluster: &TestCluster, type_: &str) -> Option<(String, String, String)> {
    bedside_tests::operator::tenant_condition(&cluster.client(), NS, TENANT, type_).await
}

/// The tenant namespace's Events as (reason, note).
async fn events(cluster: &TestCluster) -> Vec<(String, String)> {
    let resource = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "events.k8s.io",
        "v1",
        "Event",
    ));
    let events: Api<DynamicObject> = Api::namespaced_with(cluster.client(), NS, &resource);
    events
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .map(|e| {
                    let field = |f: &str| e.data[f].as_str().unwrap_or_default().to_string();
                    (field("reason"), field("note"))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn event_reasons(cluster: &TestCluster) -> Vec<String> {
    events(cluster)
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect()
}

#[tokio::test]
async fn a_new_tenant_gets_every_child_with_the_locked_settings_and_a_status() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    create_tenant(&cluster, |_| {}).await;

    let cm: ConfigMap = eventually("the config ConfigMap", WAIT, || {
        get(&cluster, "lakeside-behavioral-media-config")
    })
    .await;
    let config = bedside_crds::MediaNodeConfig::from_yaml(&config_text(&cm))
        .expect("the node accepts the rendered config");
    assert_eq!(
        config.meetings.recording,
        bedside_crds::node_config::Switch::Disabled
    );
    assert_eq!(
        config.meetings.waiting_room,
        bedside_crds::node_config::Switch::Enabled
    );
    assert_eq!(
        config.meetings.media_encryption,
        bedside_crds::node_config::MediaEncryptionMode::EndToEnd
    );
    let owner = &cm.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("HealthcareTenant", TENANT)
    );

    let deployment: StatefulSet = eventually("the media StatefulSet", WAIT, || {
        get(&cluster, "lakeside-behavioral-media")
    })
    .await;
    assert_eq!(replicas(&deployment), Some(1));
    let pod = deployment
        .spec
        .clone()
        .expect("spec")
        .template
        .spec
        .expect("pod");
    assert_eq!(
        pod.security_context.expect("psc").run_as_non_root,
        Some(true)
    );
    assert_eq!(
        pod.containers[0]
            .security_context
            .clone()
            .expect("sc")
            .read_only_root_filesystem,
        Some(true)
    );
    for name in [
        "lakeside-behavioral-signaling",
        "lakeside-behavioral-media-0",
        "lakeside-behavioral-metrics",
    ] {
        eventually(name, WAIT, || get::<Service>(&cluster, name)).await;
    }
    // The pod's own media Service, and the address the pod advertises: the tenant's public
    // address with that Service's node port.
    let service: Service = get(&cluster, "lakeside-behavioral-media-0")
        .await
        .expect("service");
    let spec = service.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    // UDP media and ICE-TCP on one node port: the pod advertises one address for both.
    let ports: Vec<(String, i32, Option<i32>)> = spec
        .ports
        .expect("ports")
        .into_iter()
        .map(|p| (p.protocol.unwrap_or_default(), p.port, p.node_port))
        .collect();
    let node_port = ports[0].2.expect("a node port");
    assert_eq!(
        ports,
        [
            ("UDP".to_string(), 3478, Some(node_port)),
            ("TCP".to_string(), 3478, Some(node_port))
        ]
    );
    let addresses: ConfigMap = eventually("the addresses ConfigMap", WAIT, || {
        get(&cluster, "lakeside-behavioral-media-addresses")
    })
    .await;
    assert_eq!(
        addresses.data.expect("data")["lakeside-behavioral-media-0"],
        format!("198.51.100.20:{node_port}")
    );
    let policy: NetworkPolicy = eventually("the NetworkPolicy", WAIT, || {
        get::<NetworkPolicy>(&cluster, "lakeside-behavioral-media")
    })
    .await;
    // The policy is in place before the pods can start: it was written first (etcd revisions
    // order writes; neither object has changed since, no kubelet runs here).
    let revision = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .expect("a numeric resourceVersion")
    };
    let set: StatefulSet = get(&cluster, "lakeside-behavioral-media")
        .await
        .expect("set");
    assert!(
        revision(&policy.metadata) < revision(&set.metadata),
        "NetworkPolicy written at revision {}, StatefulSet at {}",
        revision(&policy.metadata),
        revision(&set.metadata)
    );
    let pdb_version = if cluster.minor_version().await.expect("version") >= 21 {
        "v1"
    } else {
        "v1beta1"
    };
    let pdbs: Api<DynamicObject> = Api::namespaced_with(
        cluster.client(),
        NS,
        &ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "policy",
            pdb_version,
            "PodDisruptionBudget",
        )),
    );
    eventually("the PodDisruptionBudget", WAIT, || async {
        pdbs.get_opt("lakeside-behavioral-media")
            .await
            .ok()
            .flatten()
    })
    .await;

    let keys: Secret = eventually("the key Secret", WAIT, || {
        get(&cluster, "lakeside-behavioral-keys")
    })
    .await;
    let key_data = keys.data.clone().expect("data");
    assert_eq!(key_data["join-token.key"].0.len(), 32);
    assert_eq!(key_data["audit-hmac.key"].0.len(), 32);
    // The visits API's first credential: 256 random bits, as text an EHR team can paste.
    let api: Secret = eventually("the visits API's credentials", WAIT, || {
        get(&cluster, "lakeside-behavioral-api")
    })
    .await;
    let initial = api.data.clone().expect("data")["initial"].0.clone();
    assert_eq!(initial.len(), 64);
    assert!(initial.iter().all(u8::is_ascii_hexdigit));

    let (status, reason, _) =
        eventually("BAAActive", WAIT, || condition(&cluster, "BAAActive")).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "AgreementInForce")
    );
    let (status, reason, _) = eventually("CertificateReady", WAIT, || {
        condition(&cluster, "CertificateReady")
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "TenantSecretFound")
    );
    let (status, reason, _) = condition(&cluster, "Ready").await.expect("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "MediaNodesStarting")
    );
    let tenant = tenants(&cluster).get(TENANT).await.expect("tenant");
    let tenant_status = tenant.status.expect("status");
    assert_eq!(
        tenant_status.observed_generation,
        tenant.metadata.generation
    );
    let signaling: Service = get(&cluster, "lakeside-behavioral-signaling")
        .await
        .expect("signaling");
    let signaling_port = signaling.spec.expect("spec").ports.expect("ports")[0]
        .node_port
        .expect("a node port");
    assert_eq!(
        tenant_status.endpoint,
        Some(format!(
            "wss://telehealth.lakeside.example:{signaling_port}"
        )),
        "a NodePort tenant's signaling is on its node port"
    );
    eventually("a BAA Event", WAIT, || async {
        event_reasons(&cluster)
            .await
            .iter()
            .any(|r| r == "AgreementInForce")
            .then_some(())
    })
    .await;

    // No kubelet runs here: the test marks a media node ready the way a kubelet would.
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client(), NS);
    sets.patch_status(
        "lakeside-behavioral-media",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}}),
        ),
    )
    .await
    .expect("write StatefulSet status");
    eventually("Ready=True", WAIT, || async {
        let (status, _, _) = condition(&cluster, "Ready").await?;
        (status == "True").then_some(())
    })
    .await;

    // A config change rolls the pods; a replica change does not; the keys never change.
    let hash = config_hash(&deployment);
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        json!({"mediaNodes": {"replicas": 3}}),
        "scale",
    )
    .await;
    let scaled: StatefulSet = eventually("3 replicas", WAIT, || async {
        get::<StatefulSet>(&cluster, "lakeside-behavioral-media")
            .await
            .filter(|d| replicas(d) == Some(3))
    })
    .await;
    assert_eq!(config_hash(&scaled), hash, "scaling must not roll the pods");
    let addresses: ConfigMap = eventually("3 addresses", WAIT, || async {
        get::<ConfigMap>(&cluster, "lakeside-behavioral-media-addresses")
            .await
            .filter(|c| c.data.as_ref().is_some_and(|d| d.len() == 3))
    })
    .await;
    let distinct: std::collections::BTreeSet<&String> =
        addresses.data.as_ref().expect("data").values().collect();
    assert_eq!(
        distinct.len(),
        3,
        "each pod advertises its own address: {distinct:?}"
    );
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        json!({"meetings": {"idleTimeout": "5m"}}),
        "shorter logoff",
    )
    .await;
    let cm: ConfigMap = eventually("the 5m idle timeout in the config", WAIT, || async {
        get::<ConfigMap>(&cluster, "lakeside-behavioral-media-config")
            .await
            .filter(|c| config_text(c).contains("idleTimeout: 300s"))
    })
    .await;
    let rolled: StatefulSet = eventually("a new config hash", WAIT, || async {
        get::<StatefulSet>(&cluster, "lakeside-behavioral-media")
            .await
            .filter(|d| config_hash(d) != hash)
    })
    .await;
    assert_eq!(config_hash(&rolled).len(), 32);
    assert!(config_text(&cm).contains("recording: Disabled"));
    let keys_after: Secret = get(&cluster, "lakeside-behavioral-keys")
        .await
        .expect("keys");
    assert_eq!(
        keys_after.data, keys.data,
        "keys are never regenerated by a reconcile"
    );
    // A credential the platform team added (a rotation) stays: the operator never rewrites it.
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), NS);
    secrets
        .patch(
            "lakeside-behavioral-api",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"ehr-2027": "x".repeat(64)}})),
        )
        .await
        .expect("add a credential");
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        json!({"meetings": {"maxParticipants": 12}}),
        "more participants",
    )
    .await;
    eventually("the new limit in the config", WAIT, || async {
        get::<ConfigMap>(&cluster, "lakeside-behavioral-media-config")
            .await
            .filter(|c| config_text(c).contains("maxParticipants: 12"))
    })
    .await;
    let api_after: Secret = get(&cluster, "lakeside-behavioral-api")
        .await
        .expect("the API credentials");
    let data = api_after.data.expect("data");
    assert_eq!(data["initial"].0, api.data.expect("data")["initial"].0);
    assert!(
        data.contains_key("ehr-2027"),
        "the added credential is kept"
    );
}

#[tokio::test]
async fn load_balancers_on_a_server_without_mixed_protocols_carry_udp_media_only() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    // This v1.20 server refuses a LoadBalancer with UDP and TCP (no MixedProtocolLBService):
    // the tenant is still provisioned, its media Services UDP only.
    create_tenant(&cluster, |t| {
        t["spec"]["mediaNodes"]["serviceType"] = json!("LoadBalancer");
    })
    .await;
    {
        let pod = "lakeside-behavioral-media-0";
        let service: Service = eventually(pod, WAIT, || get::<Service>(&cluster, pod)).await;
        let spec = service.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        let protocols: Vec<String> = spec
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| p.protocol.unwrap_or_default())
            .collect();
        assert_eq!(protocols, ["UDP"], "{pod}");
    }
    // Past its Services without an error: waiting for the cloud to give them addresses.
    eventually(
        "the tenant waiting for load balancer addresses",
        WAIT,
        || async {
            let status = tenants(&cluster)
                .get("lakeside-behavioral")
                .await
                .ok()?
                .status?;
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.reason == "MediaNodesUnaddressed")
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test]
async fn edits_that_weaken_a_lock_are_reverted_and_reported() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    let operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    create_tenant(&cluster, |_| {}).await;
    eventually("SettingsLocked", WAIT, || {
        condition(&cluster, "SettingsLocked")
    })
    .await;

    // Someone edits the ConfigMap to turn recording on.
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client(), NS);
    let cm = configmaps
        .get("lakeside-behavioral-media-config")
        .await
        .expect("cm");
    let unlocked = config_text(&cm).replace("recording: Disabled", "recording: Enabled");
    configmaps
        .patch(
            "lakeside-behavioral-media-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.yaml": unlocked}})),
        )
        .await
        .expect("edit");
    eventually("recording back to Disabled", WAIT, || async {
        get::<ConfigMap>(&cluster, "lakeside-behavioral-media-config")
            .await
            .filter(|c| config_text(c).contains("recording: Disabled"))
    })
    .await;
    let (status, _, message) = eventually("SettingsLocked=DriftReverted", WAIT, || async {
        condition(&cluster, "SettingsLocked")
            .await
            .filter(|(_, r, _)| r == "DriftReverted")
    })
    .await;
    // The settings are locked again (True); the reason keeps the tampering visible.
    assert_eq!(status, "True");
    assert!(message.contains("meetings.recording"), "{message}");
    eventually("a LockedSettingReverted Warning Event", WAIT, || async {
        event_reasons(&cluster)
            .await
            .iter()
            .any(|r| r == "LockedSettingReverted")
            .then_some(())
    })
    .await;
    let (_, metrics) = operator.http_get("/metrics").await.expect("/metrics");
    assert!(
        metrics.contains(
            "bedside_operator_drift_reverted_total{kind=\"ConfigMap\",weakened_lock=\"true\"} 1"
        ),
        "{metrics}"
    );

    // A deleted Service comes back.
    let services: Api<Service> = Api::namespaced(cluster.client(), NS);
    services
        .delete("lakeside-behavioral-signaling", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the signaling Service recreated", WAIT, || {
        get::<Service>(&cluster, "lakeside-behavioral-signaling")
    })
    .await;

    // A conflicting field manager forces a writable root filesystem; the operator takes it back.
    let intruder = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "lakeside-behavioral-media", "namespace": NS},
        "spec": {"template": {"spec": {"containers": [{"name": "media-node", "securityContext": {"readOnlyRootFilesystem": false}}]}}},
    });
    let deployments: Api<StatefulSet> = Api::namespaced(cluster.client(), NS);
    deployments
        .patch(
            "lakeside-behavioral-media",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&intruder),
        )
        .await
        .expect("intruder applies");
    eventually("the read-only root filesystem taken back", WAIT, || async {
        let d = get::<StatefulSet>(&cluster, "lakeside-behavioral-media").await?;
        let sc = d.spec?.template.spec?.containers[0]
            .security_context
            .clone()?;
        (sc.read_only_root_filesystem == Some(true)).then_some(())
    })
    .await;

    // Another manager adds what the operator never sets (a server-side apply would leave it):
    // the host's network, a sidecar, the host's disk. All of it goes.
    let addition = json!({"spec": {"template": {"spec": {
        "hostNetwork": true,
        "containers": [{"name": "sidecar", "image": "busybox"}],
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
    }}}});
    deployments
        .patch(
            "lakeside-behavioral-media",
            &PatchParams::default(),
            &Patch::Strategic(&addition),
        )
        .await
        .expect("another manager adds to the pods");
    tokio::time::sleep(Duration::from_secs(8)).await;
    for e in events(&cluster).await {
        eprintln!("EVENT {e:?}");
    }
    let pod = eventually("the additions removed", WAIT, || async {
        let d = get::<StatefulSet>(&cluster, "lakeside-behavioral-media").await?;
        let pod = d.spec?.template.spec?;
        let clean = pod.host_network != Some(true)
            && pod.containers.len() == 1
            && !pod.volumes.iter().flatten().any(|v| v.host_path.is_some());
        clean.then_some(pod)
    })
    .await;
    assert_eq!(pod.containers[0].name, "media-node");
    // Reported as removed (Events of one reason are folded into a series, so the condition
    // says which).
    let (_, _, reported) = eventually("the removal reported", WAIT, || async {
        condition(&cluster, "SettingsLocked")
            .await
            .filter(|(_, _, message)| message.contains("container sidecar was added"))
    })
    .await;
    assert!(reported.contains("hostNetwork was enabled"), "{reported}");
    assert!(
        reported.contains("volume host mounts a host path"),
        "{reported}"
    );
}

/// Reconciles of the tenant's children, by where they were read: "cache" or "api".
async fn children_checks(operator: &RunningOperator, source: &str) -> f64 {
    let (_, metrics) = operator.http_get("/metrics").await.expect("/metrics");
    let sample = format!("bedside_operator_children_checks_total{{source=\"{source}\"}}");
    counter_sum(
        &metrics
            .lines()
            .filter(|l| l.starts_with(&sample))
            .collect::<Vec<_>>()
            .join("\n"),
        "bedside_operator_children_checks_total",
    )
}

/// At 10,000 tenants the periodic look at every settled tenant, a GET per child, was the API
/// server's whole capacity. Now the watch caches confirm the children unchanged, and a child
/// changed behind the operator's back is still read from the API server and put back.
#[tokio::test]
async fn a_settled_tenant_is_looked_at_from_the_watch_caches_and_a_deleted_child_is_put_back() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    let client = operator_client(&cluster).await.expect("operator client");
    let every_second = bedside_operator::reconcile::Resync {
        settled: Duration::from_secs(1),
        sink_health: Duration::from_secs(1),
    };
    let operator =
        RunningOperator::start_with_resync(client, "op-1", None, every_second).expect("operator");
    create_tenant(&cluster, |_| {}).await;
    eventually("SettingsLocked", WAIT, || {
        condition(&cluster, "SettingsLocked")
    })
    .await;
    eventually("a look answered by the caches", WAIT, || async {
        (children_checks(&operator, "cache").await >= 1.0).then_some(())
    })
    .await;

    let (cache, api) = (
        children_checks(&operator, "cache").await,
        children_checks(&operator, "api").await,
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let looks = children_checks(&operator, "cache").await - cache;
    assert!(looks >= 3.0, "resynced every second: {looks} looks in 6 s");
    assert_eq!(
        children_checks(&operator, "api").await,
        api,
        "nothing changed, so nothing was read from the API server"
    );

    // Someone deletes the NetworkPolicy that keeps the media pods' ports closed.
    let policies: Api<NetworkPolicy> = Api::namespaced(cluster.client(), NS);
    let before = policies
        .get("lakeside-behavioral-media")
        .await
        .expect("the NetworkPolicy");
    policies
        .delete("lakeside-behavioral-media", &DeleteParams::default())
        .await
        .expect("delete");
    let restored: NetworkPolicy = eventually("the NetworkPolicy back", WAIT, || async {
        get::<NetworkPolicy>(&cluster, "lakeside-behavioral-media")
            .await
            .filter(|p| p.metadata.uid != before.metadata.uid)
    })
    .await;
    assert_eq!(restored.spec, before.spec, "put back as it was");
    assert!(
        children_checks(&operator, "api").await > api,
        "the change was read from the API server"
    );
}

/// The tenant's agreement ran from 2020 to the end of 2020.
fn expired_agreement(doc: &mut Value) {
    doc["spec"]["baa"]["signedOn"] = "2020-01-01".into();
    doc["spec"]["baa"]["expiresOn"] = "2021-01-01".into();
}

/// A new agreement, in force from 2026 without an end.
async fn renew_agreement(cluster: &TestCluster) {
    let renewed = json!({"baa": {"reference": "LBH/BAA/2026-001", "signedOn": "2026-01-01", "expiresOn": null}});
    patch_tenant_spec(&cluster.client(), NS, TENANT, renewed, "renew").await;
}

#[tokio::test]
async fn an_expired_agreement_stops_media_and_an_invalid_spec_changes_nothing() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    let operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    create_tenant(&cluster, expired_agreement).await;
    let deployment: StatefulSet = eventually("the media StatefulSet", WAIT, || {
        get(&cluster, "lakeside-behavioral-media")
    })
    .await;
    assert_eq!(
        replicas(&deployment),
        Some(0),
        "no media without a BAA in force"
    );
    let (status, reason, message) =
        eventually("BAAActive", WAIT, || condition(&cluster, "BAAActive")).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AgreementExpired")
    );
    assert!(message.contains("2021-01-01"), "{message}");
    let (_, metrics) = operator.http_get("/metrics").await.expect("/metrics");
    assert!(
        metrics.contains("bedside_operator_baa_expiry_timestamp_seconds{namespace=\"tenant-lakeside\",tenant=\"lakeside-behavioral\"} 1609545600"),
        "{metrics}"
    );

    // A renewal brings media back.
    renew_agreement(&cluster).await;
    eventually("1 replica after renewal", WAIT, || async {
        get::<StatefulSet>(&cluster, "lakeside-behavioral-media")
            .await
            .filter(|d| replicas(d) == Some(1))
    })
    .await;

    // 1.20 cannot run the CEL rule that refuses two TLS sources; the operator can.
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        json!({"tls": {"issuerRef": {"name": "hospital-ca"}}, "mediaNodes": {"replicas": 4}}),
        "accepted by a server without CEL",
    )
    .await;
    let (status, _, message) = eventually("InvalidSpec", WAIT, || async {
        condition(&cluster, "SettingsLocked")
            .await
            .filter(|(_, r, _)| r == "InvalidSpec")
    })
    .await;
    assert_eq!(status, "False");
    assert!(message.contains("exactly one of issuerRef"), "{message}");
    let unchanged: StatefulSet = get(&cluster, "lakeside-behavioral-media")
        .await
        .expect("deployment");
    assert_eq!(
        replicas(&unchanged),
        Some(1),
        "an invalid spec changes nothing"
    );
}

/// A TURN relay carries the visits' media as the media nodes do: without an agreement in force
/// it runs no pod either, and a renewal brings it back.
#[tokio::test]
async fn without_an_agreement_in_force_the_relay_runs_no_pod_either() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    create_tenant(&cluster, |doc| {
        expired_agreement(doc);
        doc["spec"]["mediaNodes"] = json!({"replicas": 1, "serviceType": "LoadBalancer"});
        doc["spec"]["relay"] = json!({"hostname": "relay.lakeside.example"});
    })
    .await;
    let relay_replicas = || async {
        get::<Deployment>(&cluster, "lakeside-behavioral-relay")
            .await
            .and_then(|d| d.spec.and_then(|s| s.replicas))
    };
    let stopped = eventually("the relay Deployment", WAIT, relay_replicas).await;
    assert_eq!(stopped, 0, "no relay pod without a BAA in force");

    renew_agreement(&cluster).await;
    eventually("the relay's pod back after renewal", WAIT, || async {
        relay_replicas().await.filter(|r| *r == 1)
    })
    .await;
}

#[tokio::test]
async fn deleting_a_tenant_runs_the_finalizer_and_garbage_collects_its_children() {
    let Some(cluster) = cluster(ClusterOptions {
        controller_manager: true,
    })
    .await
    else {
        return;
    };
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    create_tenant(&cluster, |_| {}).await;
    eventually("the config ConfigMap", WAIT, || {
        get::<ConfigMap>(&cluster, "lakeside-behavioral-media-config")
    })
    .await;
    let tenant = tenants(&cluster).get(TENANT).await.expect("tenant");
    assert!(
        tenant
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"bedside.health/deprovision".to_string())
    );

    tenants(&cluster)
        .delete(TENANT, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the tenant gone", WAIT, || async {
        tenants(&cluster)
            .get_opt(TENANT)
            .await
            .ok()
            .and_then(|t| t.is_none().then_some(()))
    })
    .await;
    eventually("a Deprovisioned Event", WAIT, || async {
        event_reasons(&cluster)
            .await
            .iter()
            .any(|r| r == "Deprovisioned")
            .then_some(())
    })
    .await;
    eventually(
        "children garbage-collected",
        Duration::from_secs(60),
        || async {
            let cm = get::<ConfigMap>(&cluster, "lakeside-behavioral-media-config").await;
            cm.is_none().then_some(())
        },
    )
    .await;
    // The keys outlive the tenant: six years of its audit records verify with its key.
    let keys = get::<Secret>(&cluster, "lakeside-behavioral-keys")
        .await
        .expect("the keys Secret is retained");
    assert!(
        keys.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    let deleted_uid = tenant.metadata.uid.clone().expect("uid");
    assert_eq!(
        keys.metadata.annotations.unwrap_or_default()["bedside.health/keys-of-tenant"],
        deleted_uid
    );
    assert!(keys.data.unwrap_or_default().contains_key("audit-hmac.key"));

    // A new tenant of the same name does not inherit them: it is refused, saying what to do.
    create_tenant(&cluster, |_| {}).await;
    let refusal = eventually(
        "a ReconcileFailed Event about the old keys",
        WAIT,
        || async {
            events(&cluster)
                .await
                .into_iter()
                .find(|(reason, note)| reason == "ReconcileFailed" && note.contains(&deleted_uid))
                .map(|(_, note)| note)
        },
    )
    .await;
    assert!(refusal.contains("escrow"), "{refusal}");
    assert!(
        get::<ConfigMap>(&cluster, "lakeside-behavioral-media-config")
            .await
            .is_none(),
        "nothing provisioned on someone else's keys"
    );
    // Once the old keys are moved out, the new tenant gets keys of its own.
    Api::<Secret>::namespaced(cluster.client(), NS)
        .delete("lakeside-behavioral-keys", &DeleteParams::default())
        .await
        .expect("delete the retained keys");
    eventually("the new tenant provisioned", WAIT, || {
        get::<ConfigMap>(&cluster, "lakeside-behavioral-media-config")
    })
    .await;
    let fresh = get::<Secret>(&cluster, "lakeside-behavioral-keys")
        .await
        .expect("new keys");
    assert_ne!(
        fresh.metadata.annotations.unwrap_or_default()["bedside.health/keys-of-tenant"],
        deleted_uid
    );
}

#[tokio::test]
async fn a_keys_secret_the_operator_did_not_create_is_never_adopted() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    let planted: Secret = serde_json::from_value(json!({
        "metadata": {"name": "lakeside-behavioral-keys", "namespace": NS},
        "data": {"join-token.key": "AAAA", "audit-hmac.key": "AAAA"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &planted)
        .await
        .expect("plant a keys Secret");
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    create_tenant(&cluster, |_| {}).await;
    let refusal = eventually(
        "a ReconcileFailed Event about the planted keys",
        WAIT,
        || async {
            events(&cluster)
                .await
                .into_iter()
                .find(|(reason, note)| {
                    reason == "ReconcileFailed" && note.contains("did not create")
                })
                .map(|(_, note)| note)
        },
    )
    .await;
    assert!(refusal.contains("lakeside-behavioral-keys"), "{refusal}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        get::<StatefulSet>(&cluster, "lakeside-behavioral-media")
            .await
            .is_none(),
        "no media node runs on keys of unknown origin"
    );
}

#[tokio::test]
async fn a_restarted_operator_converges_and_only_the_leader_reconciles() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    // A crash right after the tenant appears, and a child deleted while no operator runs.
    let first = RunningOperator::start(&cluster, "op-a", true)
        .await
        .expect("operator a");
    create_tenant(&cluster, |_| {}).await;
    eventually("the signaling Service", WAIT, || {
        get::<Service>(&cluster, "lakeside-behavioral-signaling")
    })
    .await;
    first.kill();
    let services: Api<Service> = Api::namespaced(cluster.client(), NS);
    services
        .delete("lakeside-behavioral-signaling", &DeleteParams::default())
        .await
        .expect("delete");

    // Two new replicas. (In-process, the killed replica's lease task sees its receiver gone and
    // releases the Lease; a real crash leaves it to expire after 15 s.)
    let b = RunningOperator::start(&cluster, "op-b", true)
        .await
        .expect("operator b");
    let c = RunningOperator::start(&cluster, "op-c", true)
        .await
        .expect("operator c");
    eventually(
        "the Service recreated after the restart",
        Duration::from_secs(60),
        || get::<Service>(&cluster, "lakeside-behavioral-signaling"),
    )
    .await;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), "bedside-system");
    let holder = eventually("a lease holder", WAIT, || async {
        leases
            .get_opt("bedside-operator-leader")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    })
    .await;
    let b_ready = b.http_get("/readyz").await.map(|(code, _)| code);
    let c_ready = c.http_get("/readyz").await.map(|(code, _)| code);
    let (leader, standby, standby_name) = match holder.as_str() {
        "op-b" => (b, c, "op-c"),
        "op-c" => (c, b, "op-b"),
        other => panic!("unexpected lease holder {other}"),
    };
    let codes = if holder == "op-b" {
        (b_ready, c_ready)
    } else {
        (c_ready, b_ready)
    };
    assert_eq!(
        codes,
        (Some(200), Some(503)),
        "only the leader reports ready"
    );
    // And only the leader reconciled: the standby's counter has not moved.
    let reconciles = |metrics: Option<(u16, String)>| -> f64 {
        let (_, text) = metrics.expect("the operator serves /metrics");
        text.lines()
            .filter(|l| l.starts_with("bedside_operator_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    eventually("the leader reconciles", WAIT, || async {
        (reconciles(leader.http_get("/metrics").await) >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        reconciles(standby.http_get("/metrics").await),
        0.0,
        "the standby reconciled nothing"
    );

    // The leader steps down gracefully; the standby takes over and reconciles.
    leader.stop().await.expect("graceful stop");
    eventually("the standby leads", Duration::from_secs(60), || async {
        let holder = leases
            .get_opt("bedside-operator-leader")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity?;
        (holder == standby_name).then_some(())
    })
    .await;
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        json!({"mediaNodes": {"replicas": 2}}),
        "scale",
    )
    .await;
    eventually("the new leader applies the change", WAIT, || async {
        get::<StatefulSet>(&cluster, "lakeside-behavioral-media")
            .await
            .filter(|d| replicas(d) == Some(2))
    })
    .await;
    standby.stop().await.expect("graceful stop");
}

#[tokio::test]
async fn an_issuer_gets_a_cert_manager_certificate_and_monitoring_a_service_monitor() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    if !install_thirdparty_crds(&cluster)
        .await
        .expect("third-party CRDs")
    {
        return;
    }
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    ensure_namespace(&cluster, "tenant-mercy")
        .await
        .expect("namespace");
    let mercy: HealthcareTenant =
        serde_json::from_value(documents(&examples_dir().join("mercy-clinic.yaml")).remove(0))
            .expect("tenant");
    Api::<HealthcareTenant>::namespaced(cluster.client(), "tenant-mercy")
        .create(&PostParams::default(), &mercy)
        .await
        .expect("create");

    let gvk = |group: &str, kind: &str| {
        ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, "v1", kind))
    };
    let certificates: Api<DynamicObject> = Api::namespaced_with(
        cluster.client(),
        "tenant-mercy",
        &gvk("cert-manager.io", "Certificate"),
    );
    let certificate = eventually("the Certificate", WAIT, || async {
        certificates
            .get_opt("mercy-clinic-tls")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(
        certificate.data["spec"]["dnsNames"],
        json!(["meet.mercy.example"])
    );
    assert_eq!(
        certificate.data["spec"]["issuerRef"]["kind"],
        "ClusterIssuer"
    );
    assert_eq!(certificate.data["spec"]["secretName"], "mercy-clinic-tls");
    let tenants: Api<HealthcareTenant> = Api::namespaced(cluster.client(), "tenant-mercy");
    let certificate_ready = || async {
        let c = tenants
            .get("mercy-clinic")
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "CertificateReady")?;
        Some((c.status, c.reason))
    };
    let (status, reason) = eventually("CertificateReady", WAIT, certificate_ready).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CertificateNotReady")
    );

    // No cert-manager controller runs here: the test reports the issuance as cert-manager would.
    certificates
        .patch_status(
            "mercy-clinic-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "Ready",
                "message": "Certificate is up to date and has not expired",
                "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 1,
            }]}})),
        )
        .await
        .expect("write Certificate status");
    eventually("CertificateReady=True", WAIT, || async {
        let (status, reason) = certificate_ready().await?;
        (status == "True" && reason == "CertificateIssued").then_some(())
    })
    .await;

    let monitors: Api<DynamicObject> = Api::namespaced_with(
        cluster.client(),
        "tenant-mercy",
        &gvk("monitoring.coreos.com", "ServiceMonitor"),
    );
    let monitor = eventually("the ServiceMonitor", WAIT, || async {
        monitors
            .get_opt("mercy-clinic-metrics")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(monitor.data["spec"]["endpoints"][0]["port"], "metrics");
}

#[tokio::test]
async fn a_failing_reconcile_is_reported_on_the_tenant_with_the_reason() {
    // The controller manager's quota controller makes the quota enforceable.
    let Some(cluster) = cluster(ClusterOptions {
        controller_manager: true,
    })
    .await
    else {
        return;
    };
    // A quota that allows no Services: a platform team's own policy the operator cannot beat.
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(cluster.client(), NS);
    let quota = serde_json::from_value(json!({
        "metadata": {"name": "no-services", "namespace": NS},
        "spec": {"hard": {"services": "0"}},
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("create quota");
    eventually("the quota counted", Duration::from_secs(60), || async {
        quotas
            .get("no-services")
            .await
            .ok()?
            .status?
            .hard
            .map(|_| ())
    })
    .await;
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    create_tenant(&cluster, |_| {}).await;

    let note = eventually("a ReconcileFailed Event", WAIT, || async {
        events(&cluster)
            .await
            .into_iter()
            .find_map(|(reason, note)| (reason == "ReconcileFailed").then_some(note))
    })
    .await;
    assert!(
        note.contains("applying Service lakeside-behavioral-signaling"),
        "{note}"
    );
    assert!(note.contains("quota"), "{note}");
}

#[tokio::test]
async fn the_media_deployment_of_an_older_operator_is_removed_and_nobody_elses() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    create_tenant(&cluster, |_| {}).await;
    // A Deployment at the media nodes' name that the tenant does not control.
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), NS);
    let name = "lakeside-behavioral-media";
    let stranger: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "stranger"}},
            "template": {
                "metadata": {"labels": {"app": "stranger"}},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/c:1"}]},
            },
        },
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &stranger)
        .await
        .expect("create the Deployment");
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    eventually("the StatefulSet", WAIT, || {
        get::<StatefulSet>(&cluster, name)
    })
    .await;
    eventually("a status written", WAIT, || condition(&cluster, "Ready")).await;
    assert!(
        get::<Deployment>(&cluster, name).await.is_some(),
        "a Deployment the tenant does not control is left alone"
    );

    // Now it is what an operator before the StatefulSet layout left: the tenant controls it.
    let tenant = tenants(&cluster).get(TENANT).await.expect("tenant");
    let owner = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "bedside.health/v1alpha1", "kind": "HealthcareTenant",
        "name": TENANT, "uid": tenant.metadata.uid, "controller": true,
    }]}});
    deployments
        .patch(name, &PatchParams::default(), &Patch::Merge(owner))
        .await
        .expect("own it");
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        json!({"mediaNodes": {"replicas": 2}}),
        "a spec change, so the operator applies again",
    )
    .await;
    eventually("the older operator's Deployment gone", WAIT, || async {
        get::<Deployment>(&cluster, name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// A token for ServiceAccount `name` in the tenant's namespace, bound to a Role with `rules`:
/// a clinic user whose RBAC the platform team chose.
async fn clinic_user(cluster: &TestCluster, name: &str, rules: Value) -> std::path::PathBuf {
    let admin = cluster.client();
    let apply = PatchParams::apply("bedside-tests").force();
    let objects = [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NS}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": NS}, "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}]}),
    ];
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let (group, version) = match object["apiVersion"].as_str().unwrap_or_default() {
            "v1" => ("", "v1"),
            _ => ("rbac.authorization.k8s.io", "v1"),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
        let api: Api<DynamicObject> =
            Api::namespaced_with(admin.clone(), NS, &ApiResource::from_gvk(&gvk));
        let object: DynamicObject = serde_json::from_value(object).expect("object");
        api.patch(name, &apply, &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("apply the {kind}: {e}"));
    }
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(admin, NS);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}});
    let response: Value = accounts
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .expect("a token");
    let token = response["status"]["token"].as_str().expect("token");
    cluster.kubeconfig_with_token(token).expect("a kubeconfig")
}

fn book_visit(kubeconfig: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(bedside_tests::media::workspace_binary("bedside-operator"))
        .env("KUBECONFIG", kubeconfig)
        .args(["visit", "create", "--tenant", TENANT, "-n", NS])
        .args(["--host", "Practitioner/dr-7", "--patient", "Patient/8c1f2a"])
        .args(extra)
        .output()
        .expect("run bedside-operator visit create")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinic_staff_book_visits_with_the_tenants_key_when_their_rbac_allows() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    create_tenant(&cluster, |_| {}).await;
    let keys: Secret = eventually("the keys Secret", WAIT, || {
        get(&cluster, "lakeside-behavioral-keys")
    })
    .await;
    let key = keys.data.expect("data")["join-token.key"].0.clone();

    // Front-desk staff who may read the tenant but not its key: refused, and told why.
    let read_tenant = json!([{"apiGroups": ["bedside.health"], "resources": ["healthcaretenants"],
        "verbs": ["get"]}]);
    let desk = clinic_user(&cluster, "front-desk", read_tenant.clone()).await;
    let out = book_visit(&desk, &["--url", "https://telehealth.lakeside.example"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "booked without access to the key");
    assert!(
        stderr.contains("lakeside-behavioral-keys") && stderr.contains("needs `get`"),
        "the refusal names the Secret and the permission: {stderr}"
    );

    // Schedulers whose Role also grants that one Secret: links signed with the tenant's key.
    let mut rules = read_tenant;
    rules.as_array_mut().expect("rules").push(json!({"apiGroups": [""],
        "resources": ["secrets"], "resourceNames": ["lakeside-behavioral-keys"], "verbs": ["get"]}));
    let scheduler = clinic_user(&cluster, "scheduler", rules).await;
    let out = book_visit(
        &scheduler,
        &["--url", "https://telehealth.lakeside.example", "-o", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let visit: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = visit["id"].as_str().expect("id");
    assert_eq!(visit["passcode"], bedside_crds::join::passcode(&key, id));
    assert_eq!(visit["maxParticipants"], 6, "the tenant's maxParticipants");
    let link = visit["host"]["link"].as_str().expect("host link");
    let token = link.split_once("#token=").expect("token").1;
    let start = jiff::Timestamp::now().as_second() as u64;
    let verifier = bedside_crds::join::TokenVerifier::new(TENANT, &key).expect("verifier");
    let grant = verifier
        .verify(token, id, start)
        .expect("the tenant's key signed it");
    assert_eq!(grant.role, bedside_crds::join::Role::Host);

    // The tenant's own limits apply: its maxDuration is 90m.
    let out = book_visit(
        &scheduler,
        &["--url", "https://x.example", "--duration", "2h"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("duration: ") && stderr.contains("90m"),
        "{stderr}"
    );
}

fn rotate_keys(kubeconfig: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(bedside_tests::media::workspace_binary("bedside-operator"))
        .env("KUBECONFIG", kubeconfig)
        .args(["keys", "rotate", "--tenant", TENANT, "-n", NS])
        .args(extra)
        .output()
        .expect("run bedside-operator keys rotate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_key_rotation_keeps_the_old_key_for_links_in_use_and_waits_before_the_next() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    let _operator = RunningOperator::start(&cluster, "op-1", false)
        .await
        .expect("operator");
    create_tenant(&cluster, |_| {}).await;
    let keys: Secret = eventually("the keys Secret", WAIT, || {
        get(&cluster, "lakeside-behavioral-keys")
    })
    .await;
    let original = keys.data.expect("data");
    let first = original["join-token.key"].0.clone();
    let officer = clinic_user(
        &cluster,
        "security-officer",
        json!([{"apiGroups": ["bedside.health"], "resources": ["healthcaretenants"], "verbs": ["get"]},
               {"apiGroups": [""], "resources": ["secrets"],
                "resourceNames": ["lakeside-behavioral-keys"], "verbs": ["get", "patch"]}]),
    )
    .await;

    let out = rotate_keys(&officer, &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first_id = bedside_crds::join::key_id(&first);
    assert!(
        said.contains(&first_id) && said.contains("keep working"),
        "{said}"
    );
    let rotated: Secret = get(&cluster, "lakeside-behavioral-keys")
        .await
        .expect("keys");
    let data = rotated.data.expect("data");
    let second = data["join-token.key"].0.clone();
    assert_eq!(
        data["join-token.previous.key"].0, first,
        "the old key stays, as previous"
    );
    assert_ne!(second, first);
    assert_eq!(
        data["audit-hmac.key"], original["audit-hmac.key"],
        "the audit key stays"
    );

    // Links booked now are signed with the new key, and name it.
    let scheduler = clinic_user(
        &cluster,
        "scheduler",
        json!([{"apiGroups": ["bedside.health"], "resources": ["healthcaretenants"], "verbs": ["get"]},
               {"apiGroups": [""], "resources": ["secrets"],
                "resourceNames": ["lakeside-behavioral-keys"], "verbs": ["get"]}]),
    )
    .await;
    let out = book_visit(&scheduler, &["--url", "https://x.example", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let visit: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let link = visit["host"]["link"].as_str().expect("link");
    let token = link.split_once("#token=").expect("token").1;
    let header = jsonwebtoken::decode_header(token).expect("a JWT");
    assert_eq!(header.kid, Some(bedside_crds::join::key_id(&second)));

    // Again within a visit window: refused, saying until when; forced (a leaked key): done.
    let out = rotate_keys(&officer, &[]);
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && refused.contains(&first_id) && refused.contains("--force"),
        "{refused}"
    );
    let out = rotate_keys(&officer, &["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let forced: Secret = get(&cluster, "lakeside-behavioral-keys")
        .await
        .expect("keys");
    assert_eq!(
        forced.data.expect("data")["join-token.previous.key"].0,
        second
    );

    // Someone who may only read the Secret cannot rotate it, and is told what is missing.
    let out = rotate_keys(&scheduler, &["--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("patch"),
        "{stderr}"
    );
}

/// RBAC narrowed as the chart's `tenantNamespaces` narrows it: the operator writes in the
/// namespaces it was given and nowhere else. A tenant outside them is not provisioned, and its
/// status says what to grant; once granted, it is provisioned without a restart.
#[tokio::test]
async fn an_operator_given_some_namespaces_writes_there_and_nowhere_else() {
    let Some(cluster) = cluster(ClusterOptions::default()).await else {
        return;
    };
    const ELSEWHERE: &str = "tenant-elsewhere";
    ensure_namespace(&cluster, ELSEWHERE)
        .await
        .expect("namespace");
    let token = service_account_token(&cluster, "bedside-operator-scoped", Some(&[NS]))
        .await
        .expect("a ServiceAccount with the operator's roles in one namespace");
    let scoped = cluster.client_with_token(&token).await.expect("client");

    // The boundary itself, as the API server enforces it: 403 outside, not 404.
    let forbidden = |result: Result<_, kube::Error>| matches!(result, Err(kube::Error::Api(status)) if status.code == 403);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "planted"}})).expect("cm");
    for namespace in ["kube-system", ELSEWHERE] {
        let configmaps: Api<ConfigMap> = Api::namespaced(scoped.clone(), namespace);
        assert!(
            forbidden(
                configmaps
                    .create(&PostParams::default(), &cm)
                    .await
                    .map(|_| ())
            ),
            "a ConfigMap written in {namespace}"
        );
        let secrets: Api<Secret> = Api::namespaced(scoped.clone(), namespace);
        assert!(
            forbidden(secrets.get("anything").await.map(|_| ())),
            "a Secret read in {namespace}"
        );
    }
    let everywhere: Api<Secret> = Api::all(scoped.clone());
    assert!(
        forbidden(everywhere.list(&ListParams::default()).await.map(|_| ())),
        "Secrets listed"
    );

    let operator = RunningOperator::start_with_client(scoped, "scoped-0", None).expect("operator");
    create_tenant(&cluster, |_| {}).await;
    let mut other = documents(&examples_dir().join("lakeside-behavioral.yaml")).remove(0);
    other["metadata"]["namespace"] = json!(ELSEWHERE);
    let other: HealthcareTenant = serde_json::from_value(other).expect("tenant");
    Api::<HealthcareTenant>::namespaced(cluster.client(), ELSEWHERE)
        .create(&PostParams::default(), &other)
        .await
        .expect("create the tenant elsewhere");

    let _: ConfigMap = eventually("the permitted tenant's ConfigMap", WAIT, || {
        get(&cluster, "lakeside-behavioral-media-config")
    })
    .await;
    let (status, _, message) = eventually("the other tenant's NotPermitted", WAIT, || async {
        bedside_tests::operator::tenant_condition(&cluster.client(), ELSEWHERE, TENANT, "Ready")
            .await
            .filter(|(_, reason, _)| reason == "NotPermitted")
    })
    .await;
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!(
            "kubectl create rolebinding bedside-operator -n {ELSEWHERE}"
        )) && message.contains("--clusterrole=bedside-operator-tenant"),
        "the status says what to grant: {message}"
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client(), ELSEWHERE);
    assert!(
        configmaps
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bedside-operator"))
            .await
            .expect("list")
            .items
            .is_empty(),
        "nothing written where the operator may not write"
    );

    // The errors metric is counted when the failed reconcile returns, just after the status.
    eventually(
        "the errors metric names what an SRE must grant",
        WAIT,
        || async {
            let (_, metrics) = operator.http_get("/metrics").await?;
            metrics
                .lines()
                .any(|l| {
                    l.starts_with(
                        "bedside_operator_reconcile_errors_total{reason=\"not_permitted\"}",
                    )
                })
                .then_some(())
        },
    )
    .await;

    // The grant the status names: the tenant is provisioned on the next retry.
    service_account_token(&cluster, "bedside-operator-scoped", Some(&[ELSEWHERE]))
        .await
        .expect("grant");
    let _: ConfigMap = eventually(
        "the tenant provisioned once granted",
        Duration::from_secs(60),
        || async {
            configmaps
                .get_opt("lakeside-behavioral-media-config")
                .await
                .ok()
                .flatten()
        },
    )
    .await;
}
