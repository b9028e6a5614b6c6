//! The selective forwarding unit: rooms of participants whose media the node forwards.

//!
//! `command` is what signaling asks; `engine` is the sans-IO core (rooms, negotiation,
//! forwarding, str0m events); a node runs one engine per core (`shard`: rooms over loops);
//! `shell` runs one engine with its clock and sends; `dispatch` reads the media port and hands
//! each packet to its loop; `tcp` serves the ICE-TCP connections of browsers whose networks
//! block UDP.

mod batch;
pub mod command;
pub mod congestion;
mod dispatch;
pub mod engine;
pub mod participant;
pub mod recovery;
mod rewrite;
pub mod shard;
mod shell;
pub mod simulcast;
pub mod stats;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

pub use command::{Command, EngineSettings, HostAction, Joined};
pub use participant::ParticipantId;
pub use stats::EngineStats;

use crate::limits::Connections;
use crate::protocol::{ErrorCode, ProtocolError};

/// How signaling talks to the media loops: each command goes to the loop that holds its room
/// or participant (`shard`).
#[derive(Debug, Clone)]
pub struct SfuHandle {
    loops: Arc<[mpsc::Sender<Command>]>,
    /// Connection checks take turns over the loops.
    next_probe: Arc<AtomicUsize>,
}

/// The log target of each decision about a subscriber's picture (estimates, the link's loss
/// and backlog, layer targets and switches, holds, keyframe requests), at debug level:
/// `RUST_LOG=bedside::quality=debug` shows why a participant's video stepped down or froze.
/// Participants appear by their node-assigned ids only.
pub const QUALITY: &str = "bedside::quality";

/// Commands queued before a loop pushes back on signaling.
const COMMAND_QUEUE: usize = 1024;
/// Packets queued for a loop before the receive task drops more.
const INBOUND_QUEUE: usize = 4096;

impl SfuHandle {
    /// Sends a command that carries a reply channel, and waits for the reply. `Rooms` asks
    /// every loop: use [`SfuHandle::rooms`].
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ProtocolError>>) -> Command,
    ) -> Result<T, ProtocolError> {
        let (tx, rx) = oneshot::channel();
        let command = make(tx);
        debug_assert!(
            !matches!(command, Command::Rooms { .. }),
            "Rooms asks every loop: SfuHandle::rooms"
        );
        let index = self.loop_for(&command);
        self.loops[index]
            .send(command)
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Sends a command without a reply; what concerns the whole node reaches every loop.
    pub async fn tell(&self, command: Command) {
        match command {
            Command::Advertise { address } => {
                for l in self.loops.iter() {
                    let _ = l.send(Command::Advertise { address }).await;
                }
            }
            Command::Shutdown { reason } => {
                for l in self.loops.iter() {
                    let reason = reason.clone();
                    let _ = l.send(Command::Shutdown { reason }).await;
                }
            }
            command => {
                let index = self.loop_for(&command);
                let _ = self.loops[index].send(command).await;
            }
        }
    }

    /// The rooms that have a meeting on any of the node's loops.
    pub async fn rooms(&self) -> Result<Vec<String>, ProtocolError> {
        let mut rooms = Vec::new();
        for l in self.loops.iter() {
            let (reply, rx) = oneshot::channel();
            l.send(Command::Rooms { reply })
                .await
                .map_err(|_| stopped())?;
            rooms.extend(rx.await.map_err(|_| stopped())??);
        }
        Ok(rooms)
    }

    fn loop_for(&self, command: &Command) -> usize {
        let count = self.loops.len();
        match command {
            Command::Join { room, .. } | Command::Cancel { room, .. } => {
                shard::loop_for_room(room, count)
            }
            Command::Offer { id, .. }
            | Command::Answer { id, .. }
            | Command::Candidate { id, .. }
            | Command::Leave { id, .. }
            | Command::Host { id, .. }
            | Command::Unmute { id }
            | Command::Share { id, .. }
            | Command::View { id, .. } => shard::loop_for_participant(*id, count),
            Command::Probe { .. } => self.next_probe.fetch_add(1, Ordering::Relaxed) % count,
            Command::Advertise { .. } | Command::Rooms { .. } | Command::Shutdown { .. } => 0,
        }
    }
}

fn stopped() -> ProtocolError {
    ProtocolError::new(ErrorCode::NotAvailable, "the media node is shutting down")
}

/// ICE-TCP packets queued for the media loop before connections wait to hand over more.
const TCP_EVENT_QUEUE: usize = 1024;

/// Binds the media sockets (UDP, and TCP on the same port for ICE-TCP) and starts `loops`
/// media loops and the receive task; `tcp_gate` counts the ICE-TCP connections per client
/// network. The task returned ends when every loop has stopped.
pub async fn start(
    listen: SocketAddr,
    mut settings: EngineSettings,
    stats: Arc<EngineStats>,
    tcp_gate: Arc<Connections>,
    loops: usize,
) -> std::io::Result<(SfuHandle, SocketAddr, tokio::task::JoinHandle<()>)> {
    let (socket, listener) = bind(listen).await?;
    let local = socket.local_addr()?;
    if settings.advertised.port() == 0 {
        // Listening on an ephemeral port (tests, dev): advertise the port actually bound.
        settings.advertised.set_port(local.port());
    }
    let udp = Arc::new(socket);
    let (tcp_events, tcp_rx) = mpsc::channel(TCP_EVENT_QUEUE);
    tokio::spawn(tcp::accept(listener, tcp_gate, tcp_events, stats.clone()));
    let (route_tx, route_rx) = mpsc::unbounded_channel();
    let loops = loops.clamp(1, shard::MAX_LOOPS);
    stats.loops.set(loops as i64);
    let mut commands = Vec::with_capacity(loops);
    let mut inbound = Vec::with_capacity(loops);
    let mut tasks = Vec::with_capacity(loops);
    for index in 0..loops {
        let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let shard = shard::Shard {
            index,
            count: loops,
        };
        let engine =
            engine::Engine::new(settings.clone(), stats.clone(), std::time::Instant::now())
                .with_shard(shard);
        let outputs = shell::Outputs::new(udp.clone(), route_tx.clone(), index);
        let run = shell::run(engine, inbound_rx, outputs, command_rx, stats.clone());
        tasks.push(tokio::spawn(exit_on_panic(run)));
        commands.push(command_tx);
        inbound.push(inbound_tx);
    }
    let dispatch = dispatch::Dispatch {
        udp,
        tcp_events: tcp_rx,
        loops: inbound,
        route_changes: route_rx,
    };
    let receiving = tokio::spawn(exit_on_panic(dispatch::run(dispatch, stats)));
    let task = tokio::spawn(async move {
        futures::future::join_all(tasks).await;
        receiving.abort();
    });
    let handle = SfuHandle {
        loops: commands.into(),
        next_probe: Arc::new(AtomicUsize::new(0)),
    };
    Ok((handle, local, task))
}

/// Every call on this node has lost its media when a loop panics: a process that still
/// answers HTTP would hold new joins in a dead loop. Exit, so the kubelet (or whoever runs the
/// node) starts a fresh one; the audit buffers are on disk and resume.
async fn exit_on_panic(run: impl std::future::Future<Output = ()>) {
    use futures::FutureExt;
    if std::panic::AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!("a media loop panicked: exiting so that the node restarts");
        std::process::exit(70);
    }
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
