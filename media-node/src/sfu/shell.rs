//! One media loop's I/O: the packets the receive task (`dispatch`) hands it, the clock, the
//! command channel from signaling, and the sends on the node's shared UDP socket and its ICE-TCP
//! connections (`tcp.rs`). Everything else is the sans-IO `Engine`.
//!
//! Sends never wait: a full socket buffer drops the datagram (RTX repairs it) so one slow
//! subscriber never stalls the others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use str0m::net::{Protocol, Transmit};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::batch::{self, SEND_BATCH, Segmentation};
use super::command::Command;
use super::engine::Engine;
use super::shard::RouteChange;
use super::stats::EngineStats;

/// What the receive task hands a loop.
#[derive(Debug)]
pub enum Inbound {
    Packet {
        proto: Protocol,
        source: SocketAddr,
        contents: Bytes,
        arrived: Instant,
    },
    /// An ICE-TCP connection opened (every loop hears of it: its owner is not known yet).
    TcpOpened {
        remote: SocketAddr,
        outgoing: mpsc::Sender<Bytes>,
    },
    TcpClosed {
        remote: SocketAddr,
    },
}

/// A loop's way out: the node's UDP socket (shared by every loop) and the ICE-TCP connections.
pub struct Outputs {
    pub udp: Arc<UdpSocket>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    /// Tells the receive task which addresses this loop claimed or released.
    routes: mpsc::UnboundedSender<(usize, RouteChange)>,
    index: usize,
    /// UDP datagrams gathered for one `sendmmsg` call.
    pending: Vec<Transmit>,
    /// Whether runs to one subscriber go as one buffer the kernel cuts.
    segmentation: Segmentation,
}

impl Outputs {
    pub fn new(
        udp: Arc<UdpSocket>,
        routes: mpsc::UnboundedSender<(usize, RouteChange)>,
        index: usize,
    ) -> Self {
        Self {
            segmentation: Segmentation::probe(&udp),
            udp,
            tcp: HashMap::new(),
            routes,
            index,
            pending: Vec::with_capacity(SEND_BATCH),
        }
    }
}

/// Packets taken per wake-up before other work gets a turn.
const READ_BATCH: usize = 64;
/// Commands taken per wake-up: a burst of signaling never holds media back longer than this.
const COMMAND_BATCH: usize = 32;

/// Runs until a `Shutdown` command or until every command sender is gone.
pub async fn run(
    mut engine: Engine,
    mut inbound: mpsc::Receiver<Inbound>,
    mut outputs: Outputs,
    mut commands: mpsc::Receiver<Command>,
    stats: Arc<EngineStats>,
) {
    loop {
        let deadline = engine.next_deadline();
        // Unbiased: commands and packets each get their turn, whichever is flooded.
        tokio::select! {
            command = commands.recv() => {
                if !take_commands(&mut engine, command, &mut commands) {
                    report_routes(&mut engine, &outputs);
                    return;
                }
            }
            Some(first) = inbound.recv() => {
                on_inbound(&mut engine, &mut outputs, first, &stats);
                for _ in 0..READ_BATCH {
                    let Ok(next) = inbound.try_recv() else {
                        break;
                    };
                    on_inbound(&mut engine, &mut outputs, next, &stats);
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        stats.heartbeat.beat(outputs.index, now);
        engine.handle_timeout(now);
        send(&mut engine, &mut outputs, &stats);
        report_routes(&mut engine, &outputs);
        // Packet in to every subscriber's datagrams handed to the socket.
        let sent = Instant::now();
        for arrived in engine.drain_delivered() {
            stats
                .forward_delay
                .record(sent.saturating_duration_since(arrived));
        }
    }
}

fn on_inbound(engine: &mut Engine, outputs: &mut Outputs, inbound: Inbound, stats: &EngineStats) {
    match inbound {
        Inbound::Packet {
            proto,
            source,
            contents,
            arrived,
        } => {
            engine.handle_packet(proto, &contents, source, arrived);
            send(engine, outputs, stats);
        }
        Inbound::TcpOpened { remote, outgoing } => {
            outputs.tcp.insert(remote, outgoing);
        }
        Inbound::TcpClosed { remote } => {
            outputs.tcp.remove(&remote);
        }
    }
}

/// The receive task learns which addresses are this loop's.
fn report_routes(engine: &mut Engine, outputs: &Outputs) {
    for change in engine.drain_route_changes() {
        let _ = outputs.routes.send((outputs.index, change));
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

/// Everything the engine has to send, without waiting on a socket: UDP datagrams in batches
/// of up to [`SEND_BATCH`] per system call, ICE-TCP packets to their connections' queues.
fn send(engine: &mut Engine, outputs: &mut Outputs, stats: &EngineStats) {
    loop {
        outputs.pending.clear();
        while outputs.pending.len() < SEND_BATCH {
            let Some(t) = engine.poll_transmit() else {
                break;
            };
            if t.proto == Protocol::Tcp {
                match send_tcp(outputs, t.destination, &t.contents) {
                    Some(n) => {
                        stats.packets_out.inc();
                        stats.bytes_out.inc_by(n as u64);
                    }
                    None => stats.send_dropped.inc(),
                }
            } else {
                outputs.pending.push(t);
            }
        }
        if outputs.pending.is_empty() {
            return;
        }
        let sent = batch::send(&outputs.udp, &outputs.pending, &mut outputs.segmentation);
        stats.packets_out.inc_by(sent.datagrams as u64);
        stats.send_segmented.inc_by(sent.segmented as u64);
        stats.bytes_out.inc_by(sent.bytes as u64);
        stats.send_dropped.inc_by(sent.dropped as u64);
        if outputs.pending.len() < SEND_BATCH {
            return;
        }
    }
}

/// Queued for the connection's task; dropped when its queue is full or it has closed.
fn send_tcp(outputs: &Outputs, destination: SocketAddr, packet: &[u8]) -> Option<usize> {
    let connection = outputs.tcp.get(&destination)?;
    connection.try_send(Bytes::copy_from_slice(packet)).ok()?;
    Some(packet.len())
}
