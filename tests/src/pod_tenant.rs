//! A tenant on the pod-running cluster (`pods.rs`), shared by its suites and the placement
//! benchmark: the lakeside example with its TLS Secret, waiting for it, its media pods.

use std::time::Duration;

use bedside_crds::{HealthcareTenant, HealthcareTenantStatus};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::TestCluster;
use crate::examples::{documents, examples_dir};

pub const NS: &str = "tenant-lakeside";
pub const TENANT: &str = "lakeside-behavioral";
pub const SELECTOR: &str = "bedside.health/tenant=lakeside-behavioral";
/// The cluster node's address (its bridge, inside the test's network namespace): what a
/// NodePort tenant names as `publicAddress`, and where the tests' clients connect from.
pub const PUBLIC_ADDRESS: &str = "10.244.0.1";
/// The media image the tests pack from the built binary.
pub const IMAGE: &str = "localhost/bedside-media-node:test";

/// The TLS Secret the tenant names (`lakeside-meet-tls`), valid for `names` and the tenant's
/// DNS name; returns the certificate, which the tests' clients trust.
pub async fn tls_secret(cluster: &TestCluster, names: &[String]) -> Vec<u8> {
    let mut names = names.to_vec();
    names.push("telehealth.lakeside.example".into());
    let cert = rcgen::generate_simple_self_signed(names).expect("cert");
    let pem = cert.cert.pem();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "lakeside-meet-tls", "namespace": NS},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": pem, "tls.key": cert.signing_key.serialize_pem()},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the TLS secret");
    pem.into_bytes()
}

/// The lakeside example with `replicas` media nodes, exposed as `service_type` (NodePort
/// tenants at [`PUBLIC_ADDRESS`]), from `image` (else the operator's default), audit to
/// stdout (the pod log), AES-GCM media.
pub async fn create(cluster: &TestCluster, replicas: i32, service_type: &str, image: Option<&str>) {
    let audit = json!({"sinks": [{"stdout": {}}]});
    create_with_audit(cluster, replicas, service_type, image, audit).await;
}

/// As [`create`], with `audit` (sinks, storage...) as the tenant's `spec.audit`, over the
/// example's retention.
pub async fn create_with_audit(
    cluster: &TestCluster,
    replicas: i32,
    service_type: &str,
    image: Option<&str>,
    audit: serde_json::Value,
) {
    create_from(cluster, tenant_doc(replicas, service_type, image, audit)).await;
}

/// The tenant [`create_with_audit`] makes, as YAML would hold it, for a test to add to.
pub fn tenant_doc(
    replicas: i32,
    service_type: &str,
    image: Option<&str>,
    audit: serde_json::Value,
) -> serde_json::Value {
    let mut doc = documents(&examples_dir().join("lakeside-behavioral.yaml")).remove(0);
    doc["spec"]["mediaNodes"] = json!({
        "replicas": replicas,
        "serviceType": service_type,
        "publicAddress": PUBLIC_ADDRESS,
    });
    if let Some(image) = image {
        doc["spec"]["mediaNodes"]["image"] = image.into();
    }
    doc["spec"]["meetings"]["mediaEncryption"] = "Required".into();
    let serde_json::Value::Object(audit) = audit else {
        panic!("spec.audit is an object: {audit}");
    };
    for (field, value) in audit {
        doc["spec"]["audit"][field] = value;
    }
    doc
}

/// Creates the tenant `doc` describes.
pub async fn create_from(cluster: &TestCluster, doc: serde_json::Value) {
    let tenant: HealthcareTenant = serde_json::from_value(doc).expect("tenant");
    Api::<HealthcareTenant>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &tenant)
        .await
        .expect("create the tenant");
}

/// The tenant's status once it is Ready with `count` media nodes, or `None` after `within`.
pub async fn ready(
    cluster: &TestCluster,
    count: i32,
    within: Duration,
) -> Option<HealthcareTenantStatus> {
    let tenants: Api<HealthcareTenant> = Api::namespaced(cluster.client(), NS);
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if let Some(status) = tenants.get(TENANT).await.ok().and_then(|t| t.status) {
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready && status.ready_media_nodes == Some(count) {
                return Some(status);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// The tenant's media pods that are not being deleted.
pub async fn media_pods(cluster: &TestCluster) -> Vec<Pod> {
    Api::<Pod>::namespaced(cluster.client(), NS)
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The room's placement lease: which pod holds it, and the meeting's memory.
pub async fn room_lease(
    cluster: &TestCluster,
    room: &str,
) -> Option<k8s_openapi::api::coordination::v1::Lease> {
    let key = bedside_media_node::placement::room_key(room);
    Api::namespaced(cluster.client(), NS)
        .get(&format!("{TENANT}-room-{key}"))
        .await
        .ok()
}

/// The pod that holds the room.
pub async fn room_holder(cluster: &TestCluster, room: &str) -> Option<String> {
    room_lease(cluster, room).await?.spec?.holder_identity
}

/// The metrics text of a media pod, read from its metrics port at its pod IP.
pub async fn pod_metrics(pod: &Pod) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or("<no pod IP>")?;
    let mut stream = tokio::net::TcpStream::connect((ip.as_str(), 9090))
        .await
        .map_err(|_| "<metrics port closed>")?;
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut text = String::new();
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|_| "<metrics unreadable>")?;
    stream
        .read_to_string(&mut text)
        .await
        .map_err(|_| "<metrics unreadable>")?;
    Ok(text)
}

/// The tenant's conditions, one `Type=Status Reason: message` each, for a failing test's message.
pub async fn conditions(cluster: &TestCluster) -> String {
    Api::<HealthcareTenant>::namespaced(cluster.client(), NS)
        .get(TENANT)
        .await
        .ok()
        .and_then(|t| t.status)
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// The tenant's signaling at `signaling`, as a client reaches it, with the tenant's keys to
/// sign join tokens and verify its audit records.
pub async fn remote_node(
    cluster: &TestCluster,
    signaling: std::net::SocketAddr,
    cert_pem: Vec<u8>,
) -> crate::media::TestNode {
    let keys = Api::<Secret>::namespaced(cluster.client(), NS)
        .get(&format!("{TENANT}-keys"))
        .await
        .expect("keys")
        .data
        .expect("data");
    crate::media::TestNode::remote(
        signaling,
        cert_pem,
        TENANT,
        keys["join-token.key"].0.clone(),
        keys["audit-hmac.key"].0.clone(),
    )
}
