//! Datagrams to many subscribers handed to the kernel in one `sendmmsg` call: one frame in
//! becomes a datagram for each subscriber, and each call into the kernel costs as much as a
//! small packet's worth of work. A full socket buffer drops what did not fit (RTX repairs it),
//! as a single send would.

use std::io::{self, ErrorKind, IoSlice};
use std::os::fd::AsRawFd;

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use str0m::net::Transmit;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams given to the kernel in one call at most.
pub const SEND_BATCH: usize = 64;

/// What one batch came to: datagrams and bytes the kernel took, datagrams it did not.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: usize,
    pub bytes: usize,
    pub dropped: usize,
}

/// Sends `transmits` (at most [`SEND_BATCH`]) without waiting: what the socket buffer has
/// no room for is dropped and counted.
pub fn send(socket: &UdpSocket, transmits: &[Transmit]) -> Sent {
    let transmits = &transmits[..transmits.len().min(SEND_BATCH)];
    let mut sent = Sent::default();
    let mut from = 0;
    while from < transmits.len() {
        match send_once(socket, &transmits[from..]) {
            Ok((datagrams, bytes)) if datagrams > 0 => {
                sent.datagrams += datagrams;
                sent.bytes += bytes;
                from += datagrams;
            }
            Ok(_) => break,
            Err(e) => {
                if e.kind() != ErrorKind::WouldBlock {
                    tracing::debug!(error = %e, "media send failed");
                    // The datagram the kernel refused (an unreachable address) is skipped;
                    // the rest may still go.
                    sent.dropped += 1;
                    from += 1;
                    continue;
                }
                break;
            }
        }
    }
    sent.dropped += transmits.len() - from;
    sent
}

/// One `sendmmsg` call: the datagrams and bytes it took. Its headers live for the call
/// only: they hold raw pointers, which a task that moves between threads may not keep.
fn send_once(socket: &UdpSocket, transmits: &[Transmit]) -> io::Result<(usize, usize)> {
    let slices: Vec<[IoSlice<'_>; 1]> = transmits
        .iter()
        .map(|t| [IoSlice::new(&t.contents)])
        .collect();
    let addresses: Vec<Option<SockaddrStorage>> = transmits
        .iter()
        .map(|t| Some(SockaddrStorage::from(t.destination)))
        .collect();
    let fd = socket.as_raw_fd();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(transmits.len(), None);
    let no_control: [ControlMessage<'_>; 0] = [];
    socket.try_io(Interest::WRITABLE, || {
        let results = sendmmsg(
            fd,
            &mut headers,
            &slices,
            &addresses,
            no_control,
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        let mut datagrams = 0;
        let mut bytes = 0;
        for r in results {
            datagrams += 1;
            bytes += r.bytes;
        }
        Ok((datagrams, bytes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use str0m::net::Protocol;

    fn transmit(from: SocketAddr, to: SocketAddr, contents: &[u8]) -> Transmit {
        Transmit {
            proto: Protocol::Udp,
            source: from,
            destination: to,
            contents: contents.to_vec().into(),
        }
    }

    #[tokio::test]
    async fn one_call_delivers_each_datagram_to_its_own_subscriber_intact() {
        let node = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let from = node.local_addr().expect("addr");
        let (to_a, to_b) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        let batch = [
            transmit(from, to_a, b"first for a"),
            transmit(from, to_b, b"for b"),
            transmit(from, to_a, b"second for a"),
        ];
        // The runtime learns the socket is writable on its first turn, as in the node.
        node.writable().await.expect("writable");
        let sent = send(&node, &batch);
        assert_eq!(
            sent,
            Sent {
                datagrams: 3,
                bytes: 11 + 5 + 12,
                dropped: 0
            }
        );
        let mut buf = [0u8; 64];
        let mut read = async |socket: &UdpSocket| {
            let (n, source) = socket.recv_from(&mut buf).await.expect("receive");
            assert_eq!(source, from);
            buf[..n].to_vec()
        };
        assert_eq!(read(&a).await, b"first for a");
        assert_eq!(read(&a).await, b"second for a");
        assert_eq!(read(&b).await, b"for b");
    }

    #[tokio::test]
    async fn more_than_a_batch_is_cut_to_one_batch_and_the_rest_counted_as_dropped() {
        let node = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let sink = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (from, to) = (
            node.local_addr().expect("addr"),
            sink.local_addr().expect("addr"),
        );
        let many: Vec<Transmit> = (0..SEND_BATCH + 3)
            .map(|_| transmit(from, to, b"x"))
            .collect();
        node.writable().await.expect("writable");
        let sent = send(&node, &many);
        assert_eq!(sent.datagrams, SEND_BATCH);
        assert_eq!(sent.dropped, 0, "only one batch is looked at: {sent:?}");
    }
}
