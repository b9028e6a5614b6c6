//! Asks each media node of a tenant for its evidence (`/evidence` on the node's metrics port):
//! how its audit sinks are doing (the AuditSinksReady condition), and what it enforces and
//! found of its own chain (the compliance report).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use bedside_audit::evidence::NodeEvidence;

use super::evidence::NodeReport;
use super::status::SinkReport;

/// A node that does not answer within this is reported as not reporting.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What the nodes' evidence says of the audit sinks: one report per node.
pub fn sink_reports(nodes: &[NodeReport]) -> Vec<SinkReport> {
    nodes
        .iter()
        .map(|n| SinkReport {
            reporter: n.pod.clone(),
            health: n
                .evidence
                .as_ref()
                .map(|e| e.audit.clone())
                .map_err(Clone::clone),
        })
        .collect()
}

/// One report per running media-node pod that has an address; a failed list is one report
/// saying why.
pub async fn node_reports(client: &Client, namespace: &str, selector: &str) -> Vec<NodeReport> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // From the API server's watch cache (resourceVersion 0), not etcd: every reconcile asks,
    // and a report a moment old is as good.
    let list = match pods
        .list(&ListParams::default().labels(selector).match_any())
        .await
    {
        Ok(list) => list,
        Err(e) => {
            return vec![NodeReport {
                pod: "media nodes".into(),
                evidence: Err(format!("cannot list the media-node pods: {e}")),
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
        let uri = format!("http://{host}:{port}/evidence");
        let evidence = tokio::time::timeout(TIMEOUT, fetch(&http, &uri))
            .await
            .unwrap_or_else(|_| Err("no answer within 2 s".into()));
        reports.push(NodeReport {
            pod: pod.name_any(),
            evidence,
        });
    }
    reports
}

async fn fetch<C>(http: &HttpClient<C, Empty<Bytes>>, uri: &str) -> Result<NodeEvidence, String>
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
    serde_json::from_slice(&body).map_err(|e| {
        format!(
            "not a media node's evidence ({e}): run a bedside-media-node of this operator's release"
        )
    })
}
