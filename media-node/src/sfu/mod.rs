//! The selective forwarding unit: rooms of participants whose media the node forwards.

//!
//! `command` is what signaling asks; `engine` is the sans-IO core (rooms, negotiation,
//! forwarding, str0m events); `shell` owns the socket and the clock and runs the engine.

pub mod command;
pub mod engine;
pub mod participant;
mod shell;
pub mod simulcast;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

pub use command::{Command, EngineSettings, HostAction, Joined};
pub use participant::ParticipantId;
pub use stats::EngineStats;

use crate::protocol::{ErrorCode, ProtocolError};

/// How signaling talks to the media loop.
#[derive(Debug, Clone)]
pub struct SfuHandle {
    commands: mpsc::Sender<Command>,
}

/// Commands queued before the loop pushes back on signaling.
const COMMAND_QUEUE: usize = 1024;

impl SfuHandle {
    /// Sends a command that carries a reply channel, and waits for the reply.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ProtocolError>>) -> Command,
    ) -> Result<T, ProtocolError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub async fn tell(&self, command: Command) {
        let _ = self.commands.send(command).await;
    }
}

fn stopped() -> ProtocolError {
    ProtocolError::new(ErrorCode::NotAvailable, "the media node is shutting down")
}

/// Binds the media socket and starts the loop.
pub async fn start(
    listen: SocketAddr,
    mut settings: EngineSettings,
    stats: Arc<EngineStats>,
) -> std::io::Result<(SfuHandle, SocketAddr, tokio::task::JoinHandle<()>)> {
    let socket = UdpSocket::bind(listen).await?;
    let local = socket.local_addr()?;
    if settings.advertised.port() == 0 {
        // Listening on an ephemeral port (tests, dev): advertise the port actually bound.
        settings.advertised.set_port(local.port());
    }
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    let engine = engine::Engine::new(settings, stats.clone(), std::time::Instant::now());
    let task = tokio::spawn(async move {
        use futures::FutureExt;
        let run = std::panic::AssertUnwindSafe(shell::run(engine, socket, rx, stats));
        if run.catch_unwind().await.is_err() {
            // Every call on this node has lost its media: a process that still answers HTTP
            // would hold new joins in a dead loop. Exit, so the kubelet (or whoever runs the
            // node) starts a fresh one; the audit buffers are on disk and resume.
            tracing::error!("the media loop panicked: exiting so that the node restarts");
            std::process::exit(70);
        }
    });
    Ok((SfuHandle { commands }, local, task))
}
