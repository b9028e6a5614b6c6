//! ICE-TCP (RFC 6544), passive: a browser whose network blocks UDP connects to the media port
//! over TCP, and each connection carries RFC 4571 frames (a 16-bit length, then one STUN, DTLS
//! or SRTP packet). Each connection is a task that hands frames to the media loop and writes
//! what the loop queues for it; the loop itself never waits on a TCP socket.
//!
//! Connections are counted per client network and in all, like signaling's, before a byte is
//! read; one that carries no frame for [`IDLE`] is closed (a browser checks a path it uses every
//! few seconds), and so is one that sends a frame no WebRTC packet needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::stats::EngineStats;
use crate::limits::{ConnectionSlot, Connections};

/// A connection with no frame for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// Larger than any packet a WebRTC peer sends (they stay under the path MTU).
const MAX_FRAME: usize = 2048;
/// Packets queued for one connection before the loop drops more (RTX repairs them).
const OUTGOING_QUEUE: usize = 512;

/// What the connection tasks tell the media loop.
#[derive(Debug)]
pub enum TcpEvent {
    Opened {
        remote: SocketAddr,
        outgoing: mpsc::Sender<Bytes>,
    },
    Packet {
        remote: SocketAddr,
        contents: Bytes,
    },
    Closed {
        remote: SocketAddr,
    },
}

/// RFC 4571 framing: a 16-bit big-endian length before each packet.
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Accepts connections until the loop stops listening (its receiver is dropped).
pub async fn accept(
    listener: TcpListener,
    gate: Arc<Connections>,
    events: mpsc::Sender<TcpEvent>,
    stats: Arc<EngineStats>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, usually: the next accept may succeed.
                tracing::warn!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if events.is_closed() {
            return;
        }
        let slot = match gate.open(remote.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                stats.refused(refusal.into());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, remote, slot, events.clone(), stats.clone()));
    }
}

/// One connection: frames in to the loop, queued packets out, until either side ends it.
async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    _slot: ConnectionSlot,
    events: mpsc::Sender<TcpEvent>,
    stats: Arc<EngineStats>,
) {
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, codec());
    let mut sink = FramedWrite::new(write, codec());
    let (outgoing, mut queued) = mpsc::channel::<Bytes>(OUTGOING_QUEUE);
    if events
        .send(TcpEvent::Opened { remote, outgoing })
        .await
        .is_err()
    {
        return;
    }
    stats.ice_tcp_connections.inc();
    loop {
        tokio::select! {
            frame = tokio::time::timeout(IDLE, frames.next()) => {
                // Idle, closed, or a frame too large (or cut short): the connection ends.
                let Ok(Some(Ok(frame))) = frame else { break };
                let packet = TcpEvent::Packet { remote, contents: frame.freeze() };
                if events.send(packet).await.is_err() {
                    break;
                }
            }
            packet = queued.recv() => {
                let Some(packet) = packet else { break };
                if sink.send(packet).await.is_err() {
                    break;
                }
            }
        }
    }
    stats.ice_tcp_connections.dec();
    let _ = events.send(TcpEvent::Closed { remote }).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn frames_are_a_sixteen_bit_length_then_the_packet_and_oversized_ones_are_refused() {
        let mut codec = codec();
        let mut wire = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"stun"), &mut wire)
            .expect("encode");
        assert_eq!(&wire[..], b"\x00\x04stun");

        // Two frames arriving in pieces come out whole, one at a time.
        let mut incoming = BytesMut::from(&b"\x00\x03ab"[..]);
        assert!(codec.decode(&mut incoming).expect("decode").is_none());
        incoming.extend_from_slice(b"c\x00\x01z");
        let first = codec.decode(&mut incoming).expect("decode");
        assert_eq!(first.as_deref(), Some(&b"abc"[..]));
        let second = codec.decode(&mut incoming).expect("decode");
        assert_eq!(second.as_deref(), Some(&b"z"[..]));

        let mut huge = BytesMut::from(&b"\xff\xff"[..]);
        assert!(
            codec.decode(&mut huge).is_err(),
            "no WebRTC packet is 64 KiB"
        );
    }
}
