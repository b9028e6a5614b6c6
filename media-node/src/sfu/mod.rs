//! The selective forwarding unit: rooms of participants whose media the node forwards.

//!
//! `command` is what signaling asks; `engine` is the sans-IO core (rooms, negotiation,
//! forwarding, str0m events); `shell` owns the sockets and the clock and runs the engine;
//! `tcp` serves the ICE-TCP connections of browsers whose networks block UDP.

pub mod command;
pub mod engine;
pub mod participant;
mod shell;
pub mod simulcast;
pub mod stats;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

pub use command::{Command, EngineSettings, HostAction, Joined};
pub use participant::ParticipantId;
pub use stats::EngineStats;

use crate::limits::Connections;
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

/// ICE-TCP packets queued for the media loop before connections wait to hand over more.
const TCP_EVENT_QUEUE: usize = 1024;

/// Binds the media sockets (UDP, and TCP on the same port for ICE-TCP) and starts the loop;
/// `tcp_gate` counts the ICE-TCP connections per client network.
pub async fn start(
    listen: SocketAddr,
    mut settings: EngineSettings,
    stats: Arc<EngineStats>,
    tcp_gate: Arc<Connections>,
) -> std::io::Result<(SfuHandle, SocketAddr, tokio::task::JoinHandle<()>)> {
    let (socket, listener) = bind(listen).await?;
    let local = socket.local_addr()?;
    if settings.advertised.port() == 0 {
        // Listening on an ephemeral port (tests, dev): advertise the port actually bound.
        settings.advertised.set_port(local.port());
    }
    let (tcp_events, tcp_rx) = mpsc::channel(TCP_EVENT_QUEUE);
    tokio::spawn(tcp::accept(listener, tcp_gate, tcp_events, stats.clone()));
    let socket = shell::Sockets::new(socket, tcp_rx);
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

/// The UDP socket and a TCP listener on the same port. On an ephemeral port (tests, dev) the
/// TCP port may be taken by someone else: another ephemeral port is tried.
async fn bind(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut attempts = if listen.port() == 0 { 8 } else { 1 };
    loop {
        let socket = UdpSocket::bind(listen).await?;
        let port = socket.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(listener) => return Ok((socket, listener)),
            Err(e) if attempts <= 1 => return Err(e),
            Err(_) => attempts -= 1,
        }
    }
}
