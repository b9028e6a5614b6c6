//! The media engine's I/O: the one UDP socket every peer shares, the ICE-TCP connections of
//! browsers that cannot use UDP (`tcp.rs`), the clock, and the command channel from signaling.
//! Everything else is the sans-IO `Engine`.
//!
//! Sends never wait: a full socket buffer drops the datagram (RTX repairs it) so one slow
//! subscriber never stalls the others.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use str0m::net::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::command::Command;
use super::engine::Engine;
use super::stats::EngineStats;
use super::tcp::TcpEvent;

/// The media loop's sockets: the UDP socket, and the queues of the open ICE-TCP connections.
pub struct Sockets {
    pub udp: UdpSocket,
    pub tcp_events: mpsc::Receiver<TcpEvent>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
}

impl Sockets {
    pub fn new(udp: UdpSocket, tcp_events: mpsc::Receiver<TcpEvent>) -> Self {
        Self {
            udp,
            tcp_events,
            tcp: HashMap::new(),
        }
    }
}

/// Datagrams read per wake-up before other work gets a turn.
const READ_BATCH: usize = 64;
/// Larger than any datagram a WebRTC peer sends (they stay under the path MTU).
const RECEIVE_BUFFER: usize = 2048;
/// Commands taken per wake-up: a burst of signaling never holds media back longer than this.
const COMMAND_BATCH: usize = 32;

/// Runs until a `Shutdown` command or until every command sender is gone.
pub async fn run(
    mut engine: Engine,
    mut sockets: Sockets,
    mut commands: mpsc::Receiver<Command>,
    stats: Arc<EngineStats>,
) {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let deadline = engine.next_deadline();
        // Unbiased: commands and datagrams each get their turn, whichever is flooded.
        tokio::select! {
            command = commands.recv() => {
                if !take_commands(&mut engine, command, &mut commands) {
                    return;
                }
            }
            received = sockets.udp.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    receive(&mut engine, Protocol::Udp, &buf[..n], source, &stats);
                    send(&mut engine, &sockets, &stats);
                    for _ in 0..READ_BATCH {
                        let Ok((n, source)) = sockets.udp.try_recv_from(&mut buf) else {
                            break;
                        };
                        receive(&mut engine, Protocol::Udp, &buf[..n], source, &stats);
                        send(&mut engine, &sockets, &stats);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "media socket read failed"),
            },
            Some(event) = sockets.tcp_events.recv() => {
                on_tcp(&mut engine, &mut sockets, event, &stats);
                send(&mut engine, &sockets, &stats);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        stats.heartbeat.beat(now);
        engine.handle_timeout(now);
        send(&mut engine, &sockets, &stats);
        // Packet in to every subscriber's datagrams handed to the socket.
        let sent = Instant::now();
        for arrived in engine.drain_delivered() {
            stats
                .forward_delay
                .record(sent.saturating_duration_since(arrived));
        }
    }
}

/// Up to [`COMMAND_BATCH`] commands, `first` included; false when the loop must end.
fn take_commands(
    engine: &mut Engine,
    first: Option<Command>,
    commands: &mut mpsc::Receiver<Command>,
) -> bool {
    let mut next = first;
    for _ in 0..COMMAND_BATCH {
        match next {
            Some(Command::Shutdown { reason }) => {
                engine.shutdown(&reason);
                return false;
            }
            Some(command) => engine.handle_command(command, Instant::now()),
            None => {
                engine.shutdown("the node is stopping");
                return false;
            }
        }
        let Ok(command) = commands.try_recv() else {
            break;
        };
        next = Some(command);
    }
    true
}

fn on_tcp(engine: &mut Engine, sockets: &mut Sockets, event: TcpEvent, stats: &EngineStats) {
    match event {
        TcpEvent::Opened { remote, outgoing } => {
            sockets.tcp.insert(remote, outgoing);
        }
        TcpEvent::Packet { remote, contents } => {
            receive(engine, Protocol::Tcp, &contents, remote, stats);
        }
        TcpEvent::Closed { remote } => {
            sockets.tcp.remove(&remote);
        }
    }
}

fn receive(
    engine: &mut Engine,
    proto: Protocol,
    packet: &[u8],
    source: SocketAddr,
    stats: &EngineStats,
) {
    stats.packets_in.inc();
    stats.bytes_in.inc_by(packet.len() as u64);
    engine.handle_packet(proto, packet, source, Instant::now());
}

/// Everything the engine has to send, without waiting on a socket.
fn send(engine: &mut Engine, sockets: &Sockets, stats: &EngineStats) {
    while let Some(t) = engine.poll_transmit() {
        let sent = match t.proto {
            Protocol::Tcp => send_tcp(sockets, t.destination, &t.contents),
            _ => match sockets.udp.try_send_to(&t.contents, t.destination) {
                Ok(n) => Some(n),
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        tracing::debug!(error = %e, "media send failed");
                    }
                    None
                }
            },
        };
        match sent {
            Some(n) => {
                stats.packets_out.inc();
                stats.bytes_out.inc_by(n as u64);
            }
            None => stats.send_dropped.inc(),
        }
    }
}

/// Queued for the connection's task; dropped when its queue is full or it has closed.
fn send_tcp(sockets: &Sockets, destination: SocketAddr, packet: &[u8]) -> Option<usize> {
    let connection = sockets.tcp.get(&destination)?;
    connection.try_send(Bytes::copy_from_slice(packet)).ok()?;
    Some(packet.len())
}
