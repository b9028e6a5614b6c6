//! The media engine's I/O: the one UDP socket every peer shares, the clock, and the command
//! channel from signaling. Everything else is the sans-IO `Engine`.
//!
//! Sends never wait: a full socket buffer drops the datagram (RTX repairs it) so one slow
//! subscriber never stalls the others.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::command::Command;
use super::engine::Engine;
use super::stats::EngineStats;

/// Datagrams read per wake-up before other work gets a turn.
const READ_BATCH: usize = 64;
/// Larger than any datagram a WebRTC peer sends (they stay under the path MTU).
const RECEIVE_BUFFER: usize = 2048;
/// Commands taken per wake-up: a burst of signaling never holds media back longer than this.
const COMMAND_BATCH: usize = 32;

/// Runs until a `Shutdown` command or until every command sender is gone.
pub async fn run(
    mut engine: Engine,
    socket: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
    stats: Arc<EngineStats>,
) {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let deadline = engine.next_deadline();
        // Unbiased: commands and datagrams each get their turn, whichever is flooded.
        tokio::select! {
            command = commands.recv() => {
                let mut next = command;
                for _ in 0..COMMAND_BATCH {
                    match next {
                        Some(Command::Shutdown { reason }) => {
                            engine.shutdown(&reason);
                            return;
                        }
                        Some(command) => engine.handle_command(command, Instant::now()),
                        None => {
                            engine.shutdown("the node is stopping");
                            return;
                        }
                    }
                    let Ok(command) = commands.try_recv() else {
                        break;
                    };
                    next = Some(command);
                }
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    receive(&mut engine, &buf[..n], source, &stats);
                    send(&mut engine, &socket, &stats);
                    for _ in 0..READ_BATCH {
                        let Ok((n, source)) = socket.try_recv_from(&mut buf) else {
                            break;
                        };
                        receive(&mut engine, &buf[..n], source, &stats);
                        send(&mut engine, &socket, &stats);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "media socket read failed"),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        stats.heartbeat.beat(now);
        engine.handle_timeout(now);
        send(&mut engine, &socket, &stats);
        // Packet in to every subscriber's datagrams handed to the socket.
        let sent = Instant::now();
        for arrived in engine.drain_delivered() {
            stats
                .forward_delay
                .record(sent.saturating_duration_since(arrived));
        }
    }
}

fn receive(
    engine: &mut Engine,
    datagram: &[u8],
    source: std::net::SocketAddr,
    stats: &EngineStats,
) {
    stats.packets_in.inc();
    stats.bytes_in.inc_by(datagram.len() as u64);
    engine.handle_datagram(datagram, source, Instant::now());
}

/// Everything the engine has to send, without waiting on the socket.
fn send(engine: &mut Engine, socket: &UdpSocket, stats: &EngineStats) {
    while let Some(t) = engine.poll_transmit() {
        match socket.try_send_to(&t.contents, t.destination) {
            Ok(n) => {
                stats.packets_out.inc();
                stats.bytes_out.inc_by(n as u64);
            }
            Err(e) => {
                if e.kind() != ErrorKind::WouldBlock {
                    tracing::debug!(error = %e, "media send failed");
                }
                stats.send_dropped.inc();
            }
        }
    }
}
