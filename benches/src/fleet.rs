//! A fleet of tenants provisioned by the real operator binary, as its own ServiceAccount,
//! against a real API server: the operator_scale benchmark and the CI cost smoke share it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bedside_crds::HealthcareTenant;
use bedside_tests::TestCluster;
use bedside_tests::operator::{ensure_namespace, install_crd, operator_token};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

/// Tenants are spread over this many namespaces.
const NAMESPACES: usize = 10;
/// Tenants created at once.
const IN_FLIGHT: usize = 32;

/// Tenant `i`: two media pods, a stdout audit sink, a BAA in force.
pub fn tenant(i: usize) -> HealthcareTenant {
    let doc = serde_json::json!({
        "apiVersion": "bedside.health/v1alpha1", "kind": "HealthcareTenant",
        "metadata": {"name": format!("clinic-{i:04}"), "namespace": format!("bench-{}", i % NAMESPACES)},
        "spec": {
            "displayName": format!("Clinic {i}"),
            "baa": {"reference": format!("BAA-{i:04}"), "signedOn": "2026-01-01"},
            "tls": {"secretName": "clinic-tls", "dnsNames": [format!("clinic-{i}.example")]},
            "audit": {"sinks": [{"stdout": {}}]},
        },
    });
    serde_json::from_value(doc).expect("a valid tenant")
}

/// The CRD and the tenants' namespaces.
pub async fn prepare(cluster: &TestCluster) {
    install_crd(cluster).await.expect("CRD");
    for n in 0..NAMESPACES {
        ensure_namespace(cluster, &format!("bench-{n}"))
            .await
            .expect("namespace");
    }
}

/// The operator's release or debug binary, running until dropped.
#[derive(Debug)]
pub struct OperatorProcess {
    child: Child,
    port: u16,
}

impl OperatorProcess {
    /// Starts `binary` as the operator's ServiceAccount; its log goes to `log`.
    pub async fn start(cluster: &TestCluster, binary: &Path, log: &Path) -> Self {
        let kubeconfig = cluster
            .kubeconfig_with_token(&operator_token(cluster).await.expect("token"))
            .expect("kubeconfig");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = Command::new(binary)
            .args(["run", "--no-leader-election", "--http-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", &kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("BEDSIDE_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start the operator");
        Self { child, port }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The operator's Prometheus metrics, as text (empty when it does not answer).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return String::new();
        };
        let request = "GET /metrics HTTP/1.0\r\n\r\n";
        let mut response = String::new();
        if stream.write_all(request.as_bytes()).await.is_err()
            || stream.read_to_string(&mut response).await.is_err()
        {
            return String::new();
        }
        response
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates tenants `0..count`, [`IN_FLIGHT`] at a time.
pub async fn create_tenants(client: &kube::Client, count: usize) {
    futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            async move {
                let t = tenant(i);
                let ns = t.metadata.namespace.clone().expect("namespace");
                Api::<HealthcareTenant>::namespaced(client, &ns)
                    .create(&PostParams::default(), &t)
                    .await
                    .expect("create tenant");
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
}

/// Waits until `count` tenants each have their config ConfigMap and a status: how long since
/// `started`, or `None` after `deadline`.
pub async fn provisioned(
    client: &kube::Client,
    count: usize,
    started: Instant,
    deadline: Duration,
) -> Option<Duration> {
    let tenants: Api<HealthcareTenant> = Api::all(client.clone());
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    let selector = ListParams::default().labels("app.kubernetes.io/managed-by=bedside-operator");
    loop {
        // The ConfigMaps first, by metadata only: listing every whole tenant every 250 ms
        // would load the API server being measured.
        let configs = configmaps
            .list_metadata(&selector)
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        let with_status = if configs < count {
            0
        } else {
            tenants
                .list(&ListParams::default())
                .await
                .map(|l| {
                    let provisioned = |t: &&HealthcareTenant| {
                        t.status
                            .as_ref()
                            .and_then(|s| s.observed_generation)
                            .is_some()
                    };
                    l.items.iter().filter(provisioned).count()
                })
                .unwrap_or(0)
        };
        if with_status >= count && configs >= count {
            return Some(started.elapsed());
        }
        if started.elapsed() > deadline {
            eprintln!(
                "gave up after {deadline:?}: {with_status} statuses, {configs} configs of {count}"
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
