//! The receive task: reads the node's one media port (and the ICE-TCP connections' frames) and
//! hands each packet to the loop that owns its sender's address (`shard::Routes`).
//!
//! Datagrams are read several to a system call (`batch::receive`) into 64 KiB blocks that many
//! packets share, so the forwarding path does not allocate per packet; a loop's queue that is
//! full drops the packet as a full socket buffer would (RTX repairs it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::net::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::batch::{self, RECEIVE_BATCH, ReceiveSlots};
use super::shard::{RouteChange, Routes, Target};
use super::shell::Inbound;
use super::stats::EngineStats;
use super::tcp::TcpEvent;

/// Datagrams read per wake-up before route news and ICE-TCP get a turn.
const READ_BATCH: usize = 64;
/// How often idle routes are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(15);

/// The receive side of the media port and where its packets go.
pub struct Dispatch {
    pub udp: Arc<UdpSocket>,
    pub tcp_events: mpsc::Receiver<TcpEvent>,
    /// Each loop's queue, by loop index.
    pub loops: Vec<mpsc::Sender<Inbound>>,
    /// What the loops say about the addresses they own.
    pub route_changes: mpsc::UnboundedReceiver<(usize, RouteChange)>,
}

/// Runs until every loop has stopped (their queues are closed).
pub async fn run(mut dispatch: Dispatch, stats: Arc<EngineStats>) {
    let mut routes = Routes::default();
    let mut slots = ReceiveSlots::default();
    let mut expiry = tokio::time::interval(EXPIRE_EVERY);
    while dispatch.loops.iter().any(|l| !l.is_closed()) {
        tokio::select! {
            readable = dispatch.udp.readable() => match readable {
                Ok(()) => {
                    take_route_changes(&mut routes, &mut dispatch.route_changes);
                    read_waiting(&dispatch, &mut routes, &mut slots, &stats);
                }
                Err(e) => tracing::warn!(error = %e, "media socket read failed"),
            },
            Some(event) = dispatch.tcp_events.recv() => {
                take_route_changes(&mut routes, &mut dispatch.route_changes);
                on_tcp(&dispatch, &mut routes, event, &stats).await;
            }
            Some((index, change)) = dispatch.route_changes.recv() => {
                routes.apply(index, change, Instant::now());
            }
            _ = expiry.tick() => routes.expire(Instant::now()),
        }
    }
}

/// Up to [`READ_BATCH`] datagrams, [`RECEIVE_BATCH`] to a system call, each to its loop.
fn read_waiting(
    dispatch: &Dispatch,
    routes: &mut Routes,
    slots: &mut ReceiveSlots,
    stats: &EngineStats,
) {
    for _ in 0..READ_BATCH / RECEIVE_BATCH {
        let read = batch::receive(&dispatch.udp, slots, |packet, source| {
            deliver(dispatch, routes, Protocol::Udp, source, packet, stats);
        });
        match read {
            Ok(n) if n == RECEIVE_BATCH => {}
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(error = %e, "media socket read failed");
                return;
            }
        }
    }
}

fn take_route_changes(
    routes: &mut Routes,
    changes: &mut mpsc::UnboundedReceiver<(usize, RouteChange)>,
) {
    let now = Instant::now();
    while let Ok((index, change)) = changes.try_recv() {
        routes.apply(index, change, now);
    }
}

/// A connection's opening and closing reach every loop (waiting for room: a loop that missed
/// them could not answer over it); its packets go where its address is owned.
async fn on_tcp(dispatch: &Dispatch, routes: &mut Routes, event: TcpEvent, stats: &EngineStats) {
    match event {
        TcpEvent::Opened { remote, outgoing } => {
            for l in &dispatch.loops {
                let outgoing = outgoing.clone();
                let _ = l.send(Inbound::TcpOpened { remote, outgoing }).await;
            }
        }
        TcpEvent::Packet { remote, contents } => {
            deliver(dispatch, routes, Protocol::Tcp, remote, contents, stats);
        }
        TcpEvent::Closed { remote } => {
            routes.closed(remote);
            for l in &dispatch.loops {
                let _ = l.send(Inbound::TcpClosed { remote }).await;
            }
        }
    }
}

fn deliver(
    dispatch: &Dispatch,
    routes: &mut Routes,
    proto: Protocol,
    source: std::net::SocketAddr,
    contents: Bytes,
    stats: &EngineStats,
) {
    let arrived = Instant::now();
    stats.packets_in.inc();
    stats.bytes_in.inc_by(contents.len() as u64);
    let packet = |contents| Inbound::Packet {
        proto,
        source,
        contents,
        arrived,
    };
    match routes.target(proto, source, arrived) {
        Target::Loop(index) => {
            if dispatch.loops[index].try_send(packet(contents)).is_err() {
                stats.receive_dropped.inc();
            }
        }
        Target::Every => {
            for l in &dispatch.loops {
                let _ = l.try_send(packet(contents.clone()));
            }
        }
    }
}
