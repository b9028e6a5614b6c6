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
    JoinKey(#[from] crate::token::TokenError),
    #[error("cannot listen for {what} on {addr}: {source} (is another process using the port?)")]
    Listen {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("audit: {0}")]
    Audit(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
