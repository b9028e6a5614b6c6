//! Running `bedside-operator` in-process against a test cluster, authenticated as its own
//! ServiceAccount bound to its own roles (so a missing RBAC rule fails a test).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bedside_crds::HealthcareTenant;
use bedside_crds::break_glass::BreakGlass;
use bedside_operator::rbac;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{HarnessError, TestCluster};

pub const OPERATOR_NAMESPACE: &str = "bedside-system";
const SERVICE_ACCOUNT: &str = "bedside-operator";

/// Polls `check` until it returns Some, or panics after `timeout` naming what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tenant's condition of `type_` as (status, reason, message), once it has one.
pub async fn tenant_condition(
    client: &Client,
    namespace: &str,
    tenant: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let tenant = Api::<HealthcareTenant>::namespaced(client.clone(), namespace)
        .get_opt(tenant)
        .await
        .ok()??;
    let c = tenant
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

/// Merges `spec` into a tenant's spec, as a platform engineer's `kubectl patch` would;
/// `what` names the change in the failure message.
pub async fn patch_tenant_spec(
    client: &Client,
    namespace: &str,
    tenant: &str,
    spec: Value,
    what: &str,
) {
    Api::<HealthcareTenant>::namespaced(client.clone(), namespace)
        .patch(
            tenant,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

fn setup(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Config(e.to_string())
}

async fn create_or_keep<K>(api: &Api<K>, object: &K) -> Result<(), HarnessError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(setup(e)),
    }
}

/// The `lakeside-behavioral` example tenant created in `namespace` with its audit records going
/// to `sinks` (its `spec.audit.sinks`), after the Secrets a platform team makes first: its TLS
/// certificate and its SIEM's CA (`siem-ca`, from `siem_ca_pem`).
pub async fn create_lakeside_tenant(
    cluster: &TestCluster,
    namespace: &str,
    siem_ca_pem: &str,
    sinks: Value,
) -> HealthcareTenant {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.client(), namespace);
    let cert = rcgen::generate_simple_self_signed(vec!["telehealth.lakeside.example".into()])
        .expect("cert");
    for secret in [
        json!({"metadata": {"name": "lakeside-meet-tls"}, "type": "kubernetes.io/tls",
               "stringData": {"tls.crt": cert.cert.pem(), "tls.key": cert.signing_key.serialize_pem()}}),
        json!({"metadata": {"name": "siem-ca"}, "stringData": {"ca.crt": siem_ca_pem}}),
    ] {
        let secret = serde_json::from_value(secret).expect("secret");
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create a Secret");
    }
    let mut doc = crate::examples::documents(
        &crate::examples::examples_dir().join("lakeside-behavioral.yaml"),
    )
    .remove(0);
    doc["metadata"]["namespace"] = json!(namespace);
    doc["spec"]["audit"]["sinks"] = sinks;
    let tenant: HealthcareTenant = serde_json::from_value(doc).expect("tenant");
    Api::<HealthcareTenant>::namespaced(cluster.client(), namespace)
        .create(&PostParams::default(), &tenant)
        .await
        .expect("create the tenant")
}

/// One key of the tenant's `<tenant>-keys` Secret (`join-token.key`, `audit-hmac.key`), once
/// the operator has made it.
pub async fn tenant_key(
    cluster: &TestCluster,
    namespace: &str,
    tenant: &str,
    key: &str,
) -> Vec<u8> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.client(), namespace);
    let name = format!("{tenant}-keys");
    eventually(
        &format!("{key} in Secret {name}"),
        Duration::from_secs(60),
        || async {
            secrets
                .get_opt(&name)
                .await
                .ok()
                .flatten()?
                .data?
                .remove(key)
                .map(|k| k.0)
        },
    )
    .await
}

/// Installs bedside's CRDs, HealthcareTenant and BreakGlass (a plain create: 1.20 refuses to
/// server-side apply a schema with CEL rules, and drops them on create) and waits until they
/// are served.
pub async fn install_crd(cluster: &TestCluster) -> Result<(), HarnessError> {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    create_or_keep(&crds, &HealthcareTenant::crd()).await?;
    create_or_keep(&crds, &BreakGlass::crd()).await?;
    for name in [HealthcareTenant::crd_name(), BreakGlass::crd_name()] {
        established(&crds, name).await?;
    }
    Ok(())
}

async fn established(crds: &Api<CustomResourceDefinition>, name: &str) -> Result<(), HarnessError> {
    for _ in 0..100 {
        let established = crds
            .get(name)
            .await
            .ok()
            .and_then(|c| c.status)
            .is_some_and(|s| {
                s.conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(setup(format!(
        "the {name} CRD was not Established within 10s"
    )))
}

/// Installs the real cert-manager, prometheus-operator and OpenReports CRDs from
/// `BEDSIDE_THIRDPARTY_CRDS` (never committed here), minus the constructs a v1.20 server refuses: every
/// `x-kubernetes-validations` and `selectableFields`, and every `default` that is null or "".
/// Returns false, saying why, when the folder is not given; under `BEDSIDE_REQUIRE_TOOLS=1`
/// (CI) a missing folder fails, so the (e)(1) certificate proof cannot skip unseen.
pub async fn install_thirdparty_crds(cluster: &TestCluster) -> Result<bool, HarnessError> {
    let Some(dir) = std::env::var_os("BEDSIDE_THIRDPARTY_CRDS") else {
        crate::run_or_skip(
            "the cert-manager and prometheus-operator CRDs",
            Some(
                "BEDSIDE_THIRDPARTY_CRDS is not set (.ci/run points it at the machine's copies)"
                    .into(),
            ),
            "BEDSIDE_REQUIRE_TOOLS",
        );
        return Ok(false);
    };
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let mut names = Vec::new();
    for file in [
        "cert-manager.io_certificates.yaml",
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
        "openreports.io_reports.yaml",
    ] {
        let path = std::path::Path::new(&dir).join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| setup(format!("{}: {e}", path.display())))?;
        // A file may hold several CRDs (OpenReports: Report and ClusterReport).
        for document in serde_yaml::Deserializer::from_str(&text) {
            let mut value = Value::deserialize(document).map_err(setup)?;
            if value.is_null() {
                continue;
            }
            strip_for_v1_20(&mut value);
            let crd: CustomResourceDefinition = serde_json::from_value(value).map_err(setup)?;
            names.push(crd.metadata.name.clone().unwrap_or_default());
            create_or_keep(&crds, &crd).await?;
        }
    }
    for name in names {
        eventually(
            &format!("CRD {name} established"),
            Duration::from_secs(20),
            || async {
                let crd = crds.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
    Ok(true)
}

fn strip_for_v1_20(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.remove("selectableFields");
            if map
                .get("default")
                .is_some_and(|d| d.is_null() || d.as_str() == Some(""))
            {
                map.remove("default");
            }
            map.values_mut().for_each(strip_for_v1_20);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_for_v1_20),
        _ => {}
    }
}

pub async fn ensure_namespace(cluster: &TestCluster, name: &str) -> Result<(), HarnessError> {
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).map_err(setup)?;
    create_or_keep(&namespaces, &ns).await
}

/// A client that acts as the operator's ServiceAccount, with its roles (`rbac`) bound.
pub async fn operator_client(cluster: &TestCluster) -> Result<Client, HarnessError> {
    cluster
        .client_with_token(&operator_token(cluster).await?)
        .await
}

/// A token for the operator's ServiceAccount, bound to its cluster-wide role, its tenant role
/// in every namespace and its leader-election Role (created first).
pub async fn operator_token(cluster: &TestCluster) -> Result<String, HarnessError> {
    service_account_token(cluster, SERVICE_ACCOUNT, None).await
}

/// A token for ServiceAccount `name` in the operator's namespace with the operator's roles;
/// `tenant_namespaces` limits where it may write, as the chart's `tenantNamespaces` does (None:
/// everywhere).
pub async fn service_account_token(
    cluster: &TestCluster,
    name: &str,
    tenant_namespaces: Option<&[&str]>,
) -> Result<String, HarnessError> {
    let admin = cluster.client();
    ensure_namespace(cluster, OPERATOR_NAMESPACE).await?;
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE}
    }))
    .map_err(setup)?;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), OPERATOR_NAMESPACE);
    create_or_keep(&accounts, &sa).await?;
    let apply = PatchParams::apply("bedside-tests").force();
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    for role in [rbac::cluster_role(), rbac::tenant_role()] {
        let role_name = role.metadata.name.clone().unwrap_or_default();
        cluster_roles
            .patch(&role_name, &apply, &Patch::Apply(role))
            .await
            .map_err(setup)?;
    }
    let roles: Api<Role> = Api::namespaced(admin.clone(), OPERATOR_NAMESPACE);
    roles
        .patch(
            rbac::LEADER_ROLE,
            &apply,
            &Patch::Apply(rbac::leader_role(OPERATOR_NAMESPACE)),
        )
        .await
        .map_err(setup)?;
    let subject =
        json!([{"kind": "ServiceAccount", "name": name, "namespace": OPERATOR_NAMESPACE}]);
    let binding = |kind: &str, role_kind: &str, role: &str, namespace: Option<&str>| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": {"name": format!("{name}-{role}"), "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subject,
        })
    };
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    let mut cluster_wide = vec![binding(
        "ClusterRoleBinding",
        "ClusterRole",
        rbac::CLUSTER_ROLE,
        None,
    )];
    let mut namespaced = vec![binding(
        "RoleBinding",
        "Role",
        rbac::LEADER_ROLE,
        Some(OPERATOR_NAMESPACE),
    )];
    match tenant_namespaces {
        None => cluster_wide.push(binding(
            "ClusterRoleBinding",
            "ClusterRole",
            rbac::TENANT_ROLE,
            None,
        )),
        Some(namespaces) => {
            for namespace in namespaces {
                ensure_namespace(cluster, namespace).await?;
                namespaced.push(binding(
                    "RoleBinding",
                    "ClusterRole",
                    rbac::TENANT_ROLE,
                    Some(namespace),
                ));
            }
        }
    }
    for object in cluster_wide {
        create_or_keep(
            &cluster_bindings,
            &serde_json::from_value(object).map_err(setup)?,
        )
        .await?;
    }
    for object in namespaced {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &namespace);
        create_or_keep(&bindings, &serde_json::from_value(object).map_err(setup)?).await?;
    }

    // A day: a 10,000-tenant benchmark runs for more than the hour a shorter token lasted.
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 86400},
    });
    let response: Value = accounts
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .map_err(setup)?;
    response["status"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| setup("TokenRequest returned no token"))
}

/// The sum of every sample of a metric family (`name` and any labels) in Prometheus text.
pub fn counter_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// An operator running in this test process.
pub struct RunningOperator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), bedside_operator::reconcile::Error>>>,
    pub http_addr: SocketAddr,
    /// The operator's audit buffers, removed with it.
    pub audit_dir: tempfile::TempDir,
}

impl std::fmt::Debug for RunningOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningOperator")
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

impl RunningOperator {
    /// Starts the operator as its ServiceAccount; `leader_election` puts it behind the Lease.
    pub async fn start(
        cluster: &TestCluster,
        identity: &str,
        leader_election: bool,
    ) -> Result<Self, HarnessError> {
        let client = operator_client(cluster).await?;
        Self::start_with_client(
            client,
            identity,
            leader_election.then_some(OPERATOR_NAMESPACE),
        )
    }

    /// Starts the operator with `client`'s credentials (e.g. the Helm chart's ServiceAccount),
    /// with its Lease in `lease_namespace` when given.
    pub fn start_with_client(
        client: Client,
        identity: &str,
        lease_namespace: Option<&str>,
    ) -> Result<Self, HarnessError> {
        let resync = bedside_operator::reconcile::Resync {
            // Nodes' audit sink reports show in the status within seconds, not half a minute.
            sink_health: Duration::from_secs(2),
            ..Default::default()
        };
        Self::start_with_resync(client, identity, lease_namespace, resync)
    }

    /// Starts the operator with its own resync periods.
    pub fn start_with_resync(
        client: Client,
        identity: &str,
        lease_namespace: Option<&str>,
        resync: bedside_operator::reconcile::Resync,
    ) -> Result<Self, HarnessError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(setup)?
            .port();
        let http_addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let audit_dir = tempfile::tempdir().map_err(setup)?;
        let settings = bedside_operator::run::Settings {
            http_addr: Some(http_addr),
            lease_namespace: lease_namespace.map(str::to_string),
            identity: identity.into(),
            concurrency: 16,
            audit_dir: audit_dir.path().to_path_buf(),
            resync,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bedside_operator::run::run(client, settings, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            stop: Some(stop),
            task: Some(task),
            http_addr,
            audit_dir,
        })
    }

    /// Stops it as SIGTERM would, and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(result)) => result.map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the operator did not stop within 30s".into()),
            },
            None => Ok(()),
        }
    }

    /// Aborts it mid-flight, without the graceful shutdown path.
    pub fn kill(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// GET a path on the operator's HTTP server: (status code, body).
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.http_addr).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The Pod object of a media node this process runs, for a cluster without a kubelet: pod
/// `<tenant>-media-0` of the tenant, Running at 127.0.0.1 with the node's metrics port, so the
/// operator asks it for its evidence as it asks a real pod.
pub async fn media_pod_object(
    cluster: &TestCluster,
    namespace: &str,
    tenant: &str,
    metrics_port: u16,
) {
    use k8s_openapi::api::core::v1::Pod;
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client(), namespace);
    let _ = accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa"),
        )
        .await;
    let name = format!("{tenant}-media-0");
    let pods: Api<Pod> = Api::namespaced(cluster.client(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/name": "bedside-media-node",
            "app.kubernetes.io/instance": tenant,
            "bedside.health/tenant": tenant,
        }},
        "spec": {
            "nodeName": "no-kubelet",
            "automountServiceAccountToken": false,
            "containers": [{"name": "media-node", "image": "bedside-media-node",
                "ports": [{"name": "metrics", "containerPort": metrics_port}]}],
        },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the pod");
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}]}})),
    )
    .await
    .expect("pod status");
}
