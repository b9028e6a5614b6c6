//! Harnesses for bedside's end-to-end suites: real components started on loopback by the
//! test, stopped by PID when it ends. The suites themselves are in `tests/tests/`.

pub mod aiortc;
pub mod binaries;
pub mod browser;
pub mod cluster;
pub mod examples;
pub mod https;
pub mod janus;
pub mod load_peer;
pub mod media;
pub mod operator;
pub mod picture;
pub mod pod_tenant;
pub mod pods;
pub mod prometheus;
pub mod rsyslog;
pub mod turn;

pub use cluster::{ClusterOptions, TestCluster};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether a suite that needs an external tool can run here. With the tool present: true.
/// Without it: a SKIP line saying why and false, or a panic when `require_var` is "1" (CI sets
/// it, so there a missing tool is a failure, never a silent skip).
pub fn run_or_skip(what: &str, unavailable: Option<String>, require_var: &str) -> bool {
    let Some(why) = unavailable else {
        return true;
    };
    if std::env::var(require_var).as_deref() == Ok("1") {
        panic!("{what} is required here ({require_var}=1) but cannot run: {why}");
    }
    eprintln!("SKIP: {what}: {why}");
    false
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot find {name}: {hint}")]
    MissingBinary { name: String, hint: String },
    #[error("cannot {action}: {source}")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{name} exited with {status} before the cluster was ready; its last log lines:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    #[error("kube-apiserver was not ready after {after:?}; its last log lines:\n{log}")]
    NotReady { after: Duration, log: String },
    #[error("test cluster setup: {0}")]
    Config(String),
}

impl HarnessError {
    fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> HarnessError {
        move |source| HarnessError::Io { action, source }
    }
}
