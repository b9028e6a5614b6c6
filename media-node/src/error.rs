//! The one error type of the media node: each variant says what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::LoadError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{path}: cannot read {what}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("join-token key: {0}")]
    JoinKey(#[from] bedside_crds::join::TokenError),
    #[error("cannot listen for {what} on {addr}: {source} (is another process using the port?)")]
    Listen {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("audit: {0}")]
    Audit(String),
    #[error(
        "room placement needs the Kubernetes API (Leases in namespace {namespace}): {source}; \
         check that the pod runs as the tenant's media ServiceAccount, which the operator binds \
         to a Role for leases"
    )]
    Placement {
        namespace: String,
        source: Box<kube::Error>,
    },
    #[error("room placement: other pods kept changing this room's lease; try again")]
    PlacementContended,
    #[error(
        "room placement: the Leases in namespace {namespace} could be listed, but the watch on \
         them gave nothing within {waited:?}; check that the API server's watch reaches the pod \
         (NetworkPolicy egress to 443/6443, proxies that cut long requests)"
    )]
    PlacementNotReady {
        namespace: String,
        waited: std::time::Duration,
    },
    #[error(
        "{path}: the TURN relay's shared secret has {bytes} byte(s); use at least 32 random bytes \
         (e.g. `openssl rand -hex 32`), the same as coturn's static-auth-secret"
    )]
    RelaySecret { path: PathBuf, bytes: usize },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Visit(bedside_crds::visit::VisitError),
}
