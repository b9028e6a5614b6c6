//! Delivery: records sealed into the chain ([`auditor`]), written as JSON lines to the stdout
//! sink, and appended to each network sink's disk-backed buffer ([`spool`]), from which
//! [`syslog`] (RFC 5424 over TLS) and [`webhook`] (HTTPS JSON batches) deliver them at least
//! once. [`health`] reports each sink's state; [`lock`] keeps one process writing a chain. The media
//! node and the operator share it.

pub mod auditor;
pub mod health;
pub mod lock;
pub mod pace;
pub mod spool;
pub mod syslog;
pub mod tls;
pub mod webhook;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

pub use self::auditor::{Auditor, BufferState, Who};
pub use self::health::{AuditHealthReport, AuditMetrics, SinkTransition};
pub use self::lock::ChainLock;
use self::spool::Spool;
pub use crate::event::BufferFullPolicy;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{what}: {detail}")]
    Setup { what: String, detail: String },
    #[error("{what} ({path}): {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] prometheus::Error),
    /// A record was sealed but not written everywhere (a full disk, a closed stdout): the
    /// visit it was about must not go on unaudited.
    #[error("the audit record could not be kept ({0}); free the audit buffer's volume")]
    Unrecorded(String),
}

impl DeliveryError {
    fn setup(what: impl Into<String>, detail: impl ToString) -> Self {
        Self::Setup {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// One network sink, with its secrets already read.
#[derive(Clone)]
pub enum NetworkSink {
    Syslog {
        address: String,
        ca_pem: Vec<u8>,
    },
    Webhook {
        url: String,
        token: String,
        /// A private CA; the system's roots when `None`.
        ca_pem: Option<Vec<u8>>,
    },
}

impl std::fmt::Debug for NetworkSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Syslog { address, .. } => {
                f.debug_struct("Syslog").field("address", address).finish()
            }
            // Never the token.
            Self::Webhook { url, .. } => f.debug_struct("Webhook").field("url", url).finish(),
        }
    }
}

/// Everything one chain's delivery needs.
#[allow(missing_debug_implementations)] // holds a key and a writer
pub struct Plan<'a> {
    pub key: &'a [u8],
    pub tenant: &'a str,
    /// The node or operator replica: the chain's name in every record.
    pub node: &'a str,
    /// The app name in syslog headers.
    pub app: &'static str,
    /// Where the stdout sink writes (stdout itself, or a file in tests); `None` without one.
    pub out: Option<Box<dyn Write + Send>>,
    pub buffer_dir: &'a Path,
    /// Where the chain's last record is kept, so the next process continues it.
    pub chain_tail: PathBuf,
    /// Network sinks by their index in the tenant's spec.
    pub sinks: Vec<(usize, NetworkSink)>,
    pub buffer_bytes: u64,
    pub when_buffer_full: BufferFullPolicy,
    pub checkpoint_interval: Duration,
}

/// Opens the buffers, starts a delivery task per network sink and one that seals sink
/// failures, recoveries and checkpoints. Must run inside a tokio runtime.
pub fn start(plan: Plan<'_>, metrics: &AuditMetrics) -> Result<Arc<Auditor>, DeliveryError> {
    std::fs::create_dir_all(plan.buffer_dir).map_err(|source| DeliveryError::File {
        what: "the audit buffer directory",
        path: plan.buffer_dir.to_path_buf(),
        source,
    })?;
    let (transitions, transitions_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut spools = Vec::new();
    let mut tasks = Vec::new();
    for (index, sink) in plan.sinks {
        let spool = Spool::open(plan.buffer_dir, &format!("sink-{index}")).map_err(|source| {
            DeliveryError::File {
                what: "the audit buffer directory",
                path: plan.buffer_dir.to_path_buf(),
                source,
            }
        })?;
        let (spool, wake) = (Arc::new(spool), Arc::new(Notify::new()));
        let health = |kind| metrics.sink(index, kind, Some(transitions.clone()));
        let task = spawn_delivery(
            sink,
            spool.clone(),
            wake.clone(),
            plan.node,
            plan.app,
            health,
        )?;
        tasks.push(task);
        spools.push((spool, wake));
    }
    let auditor = Arc::new(Auditor::new(
        plan.key,
        plan.tenant,
        plan.node,
        plan.out,
        spools,
        Some(plan.chain_tail),
        (plan.buffer_bytes, plan.when_buffer_full),
    )?);
    auditor.own_tasks(tasks);
    if let Some(flusher) = spawn_group_commit(auditor.spools().to_vec()) {
        auditor.own_tasks(vec![flusher]);
    }
    spawn_transitions_and_checkpoints(&auditor, transitions_rx, plan.checkpoint_interval);
    Ok(auditor)
}

/// One network sink's delivery task, reading from `spool`.
fn spawn_delivery(
    sink: NetworkSink,
    spool: Arc<Spool>,
    wake: Arc<Notify>,
    node: &str,
    app: &'static str,
    health: impl Fn(&'static str) -> health::SinkHealth,
) -> Result<tokio::task::AbortHandle, DeliveryError> {
    let task = match sink {
        NetworkSink::Syslog { address, ca_pem } => {
            let tls = tls::client_config(tls::Trust::Ca(&ca_pem))
                .map_err(|e| DeliveryError::setup(format!("syslog sink {address}"), e))?;
            let target = syslog::Target {
                address,
                tls,
                hostname: node.to_string(),
                app,
            };
            tokio::spawn(syslog::deliver(spool, target, wake, health("syslog")))
        }
        NetworkSink::Webhook { url, token, ca_pem } => {
            let trust = ca_pem.as_deref().map_or(tls::Trust::System, tls::Trust::Ca);
            let tls = tls::client_config(trust)
                .map_err(|e| DeliveryError::setup(format!("webhook sink {url}"), e))?;
            tokio::spawn(webhook::deliver(
                spool,
                url,
                token,
                tls,
                wake,
                health("webhook"),
            ))
        }
    };
    Ok(task.abort_handle())
}

/// Group commit: the buffers reach the disk every [`spool::SYNC_EVERY`], off the join path.
fn spawn_group_commit(spools: Vec<Arc<Spool>>) -> Option<tokio::task::AbortHandle> {
    if spools.is_empty() {
        return None;
    }
    let flusher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(spool::SYNC_EVERY);
        loop {
            tick.tick().await;
            for s in &spools {
                let s = s.clone();
                let result = tokio::task::spawn_blocking(move || s.sync()).await;
                if let Ok(Err(e)) = result {
                    tracing::error!(error = %e, "cannot sync the audit buffer to disk");
                }
            }
        }
    });
    Some(flusher.abort_handle())
}

/// Sink failures and recoveries become records; checkpoints mark the chain every `interval`.
/// The task ends with the auditor.
fn spawn_transitions_and_checkpoints(
    auditor: &Arc<Auditor>,
    mut transitions: tokio::sync::mpsc::UnboundedReceiver<SinkTransition>,
    interval: Duration,
) {
    let recorder = Arc::downgrade(auditor);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        // Without network sinks nobody holds a sender: the channel is closed from the start,
        // and a closed channel answers `recv` at once, so its arm must be switched off.
        let mut sinks_open = true;
        loop {
            let transition = tokio::select! {
                t = transitions.recv(), if sinks_open => match t {
                    Some(t) => Some(t),
                    None => {
                        sinks_open = false;
                        continue;
                    }
                },
                _ = tick.tick() => None,
            };
            let Some(auditor) = recorder.upgrade() else {
                return;
            };
            match transition {
                Some(t) => auditor.sink_transition(&t),
                None => auditor.checkpoint(),
            }
        }
    });
}
