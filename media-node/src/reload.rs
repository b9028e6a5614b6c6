//! Material mounted from Secrets (the TLS certificate, the join keys) is read again while the
//! node runs: the kubelet swaps a Secret's files within about a minute of a change, and a
//! renewal or a rotation must reach a running node without a restart.

use std::time::Duration;

use crate::error::NodeError;

/// How often mounted files are read again (reading a few small files is cheap).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// What reading mounted material again did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Replaced,
}

/// Calls `reload` every [`RELOAD_INTERVAL`] until `shutdown`, handing each outcome to
/// `outcome` (which logs and counts it).
pub async fn every_interval(
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    reload: impl Fn() -> Result<Reload, NodeError>,
    outcome: impl Fn(Result<Reload, NodeError>),
) {
    let mut every = tokio::time::interval(RELOAD_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        outcome(reload());
    }
}
