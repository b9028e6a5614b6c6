//! Asks each media node of a tenant how its audit sinks are doing (`/audit/health` on the
//! node's metrics port), for the AuditSinksReady condition.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::status::{AuditHealth, SinkReport};

/// A node that does not answer within this is reported as not reporting.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One report per running media-node pod that has an address.
pub async fn node_reports(client: &Client, namespace: &str, selector: &str) -> Vec<SinkReport> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // From the API server's watch cache (resourceVersion 0), not etcd: every reconcile asks,
    // and a report a moment old is as good.
    let list = match pods
        .list(&ListParams::default().labels(selector).match_any())
        .await
    {
        Ok(list) => list,
        Err(e) => {
            return vec![SinkReport {
                reporter: "media nodes".into(),
                health: Err(format!("cannot list the media-node pods: {e}")),
            }];
        }
    };
    let http: HttpClient<_, Empty<Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let mut reports = Vec::new();
    for pod in list.items {
        let status = pod.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let Some(ip) = status.and_then(|s| s.pod_ip.clone()).filter(|_| running) else {
            continue;
        };
        let port = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some("metrics")))
            .map(|p| p.container_port);
        let Some(port) = port else { continue };
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        let uri = format!("http://{host}:{port}/audit/health");
        let health = tokio::time::timeout(TIMEOUT, fetch(&http, &uri))
            .await
            .unwrap_or_else(|_| Err("no answer within 2 s".into()));
        reports.push(SinkReport {
            reporter: pod.name_any(),
            health,
        });
    }
    reports
}

async fn fetch<C>(http: &HttpClient<C, Empty<Bytes>>, uri: &str) -> Result<AuditHealth, String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let uri: http::Uri = uri.parse().map_err(|e| format!("{uri}: {e}"))?;
    let response = http.get(uri).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("not an audit health report: {e}"))
}
