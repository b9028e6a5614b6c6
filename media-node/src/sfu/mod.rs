//! The selective forwarding unit: rooms of participants whose media the node forwards.

pub mod engine;
pub mod participant;
pub mod simulcast;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

pub use engine::{Command, EngineSettings, HostAction, Joined};
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
    let engine = engine::Engine::new(socket, settings, stats);
    let task = tokio::spawn(engine.run(rx));
    Ok((SfuHandle { commands }, local, task))
}
