//! Datagrams to many subscribers handed to the kernel in one `sendmmsg` call: one frame in
//! becomes a datagram for each subscriber, and each call into the kernel costs as much as a
//! small packet's worth of work. A full socket buffer drops what did not fit (RTX repairs it),
//! as a single send would.
//!
//! Where one subscriber's datagrams follow each other in a batch, they go as one buffer that
//! the kernel cuts into datagrams (UDP segmentation offload, `UDP_SEGMENT`): the network stack
//! is walked once for the run, and a NIC that segments in hardware does the cutting. Such runs
//! are rare: str0m's pacer spaces a subscriber's video packets at its pacing rate, so in a
//! browser call 30 of 36,000 datagrams went this way (docs/benchmarks.md). A kernel or device
//! that refuses it turns it off for the loop, which then sends each datagram as before.
//!
//! The receive side reads up to [`RECEIVE_BATCH`] datagrams in one `recvmmsg` call, into slots
//! cut from shared blocks, so reading allocates per block, not per packet.

use std::io::{self, ErrorKind, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;

use bytes::{Bytes, BytesMut};
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, getsockopt, recvmmsg,
    sendmmsg, sendmsg, sockopt::UdpGsoSegment,
};
use str0m::net::Transmit;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams given to the kernel in one call at most.
pub const SEND_BATCH: usize = 64;
/// Datagrams cut from one buffer at most (the kernel's `UDP_MAX_SEGMENTS` since 4.18).
pub const MAX_SEGMENTS: usize = 64;
/// Bytes in one buffer to be cut at most: one UDP datagram's largest payload over IPv4, less
/// room for the headers.
pub const MAX_SEGMENTED_BYTES: usize = 65_000;

/// What one batch came to: datagrams and bytes the kernel took, datagrams it did not, and how
/// many of those it took went out in segmented runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: usize,
    pub bytes: usize,
    pub dropped: usize,
    pub segmented: usize,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, other: Sent) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.dropped += other.dropped;
        self.segmented += other.segmented;
    }
}

/// Whether a loop cuts runs of datagrams in the kernel: on where the kernel knows the option,
/// off for good after the first refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmentation {
    on: bool,
}

impl Segmentation {
    /// On when the kernel knows `UDP_SEGMENT` for this socket (Linux 4.18 and later), unless
    /// `BEDSIDE_MEDIA_GSO=off` turns it off (to compare, or for a device that mishandles it).
    pub fn probe(socket: &UdpSocket) -> Self {
        let wanted = std::env::var("BEDSIDE_MEDIA_GSO").map_or(true, |v| v != "off");
        let known = getsockopt(socket, UdpGsoSegment).is_ok();
        if wanted && !known {
            tracing::info!("the kernel has no UDP segmentation offload: datagrams go one by one");
        }
        Self {
            on: wanted && known,
        }
    }

    /// Each datagram alone.
    pub fn off() -> Self {
        Self { on: false }
    }
}

/// The runs `transmits` fall into, in order: consecutive datagrams to one destination that
/// the kernel can cut from one buffer, as it cuts at a fixed size: each the size of the
/// run's first but the last, which may be smaller. A lone datagram is a run of one.
pub fn segment_runs(transmits: &[Transmit]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let first = transmits.get(start)?;
        let size = first.contents.len();
        let mut end = start + 1;
        let mut bytes = size;
        while let Some(next) = transmits.get(end) {
            let len = next.contents.len();
            let fits = next.destination == first.destination
                && len <= size
                && end - start < MAX_SEGMENTS
                && bytes + len <= MAX_SEGMENTED_BYTES;
            if !fits {
                break;
            }
            end += 1;
            bytes += len;
            if len < size {
                // A shorter datagram can only end a run.
                break;
            }
        }
        let run = start..end;
        start = end;
        Some(run)
    })
}

/// Sends `transmits` (at most [`SEND_BATCH`]) without waiting: what the socket buffer has
/// no room for is dropped and counted. Runs to one destination go segmented while
/// `segmentation` is on; the lone datagrams between them in one `sendmmsg` call each time.
pub fn send(socket: &UdpSocket, transmits: &[Transmit], segmentation: &mut Segmentation) -> Sent {
    let transmits = &transmits[..transmits.len().min(SEND_BATCH)];
    if !segmentation.on {
        return send_each(socket, transmits);
    }
    let mut sent = Sent::default();
    let mut lone_from = 0;
    for run in segment_runs(transmits) {
        if run.len() < 2 {
            continue;
        }
        sent += send_each(socket, &transmits[lone_from..run.start]);
        sent += send_run(socket, &transmits[run.clone()], segmentation);
        lone_from = run.end;
    }
    sent += send_each(socket, &transmits[lone_from..]);
    sent
}

/// One run as one buffer the kernel cuts; each datagram alone if the kernel refuses.
fn send_run(socket: &UdpSocket, run: &[Transmit], segmentation: &mut Segmentation) -> Sent {
    let Ok(size) = u16::try_from(run[0].contents.len()) else {
        return send_each(socket, run);
    };
    let slices: Vec<IoSlice<'_>> = run.iter().map(|t| IoSlice::new(&t.contents)).collect();
    let address = SockaddrStorage::from(run[0].destination);
    let fd = socket.as_raw_fd();
    let segments = [ControlMessage::UdpGsoSegments(&size)];
    let result = socket.try_io(Interest::WRITABLE, || {
        sendmsg(fd, &slices, &segments, MsgFlags::empty(), Some(&address)).map_err(io::Error::from)
    });
    match result {
        Ok(bytes) => Sent {
            datagrams: run.len(),
            bytes,
            dropped: 0,
            segmented: run.len(),
        },
        Err(e) if e.kind() == ErrorKind::WouldBlock => Sent {
            dropped: run.len(),
            ..Sent::default()
        },
        Err(e) if refused(&e) => {
            tracing::warn!(
                error = %e,
                "the kernel refused UDP segmentation offload: this media loop sends each datagram alone from now on"
            );
            *segmentation = Segmentation::off();
            send_each(socket, run)
        }
        Err(e) => {
            // As for a lone datagram: an unreachable address loses what was sent to it.
            tracing::debug!(error = %e, "media send failed");
            Sent {
                dropped: run.len(),
                ..Sent::default()
            }
        }
    }
}

/// What a kernel or device without segmentation answers (no checksum offload: EIO; an option
/// it does not know or support: EINVAL, ENOPROTOOPT, EOPNOTSUPP).
fn refused(e: &io::Error) -> bool {
    [
        Errno::EIO,
        Errno::EINVAL,
        Errno::ENOPROTOOPT,
        Errno::EOPNOTSUPP,
    ]
    .iter()
    .any(|errno| e.raw_os_error() == Some(*errno as i32))
}

/// Each datagram alone, in `sendmmsg` calls.
fn send_each(socket: &UdpSocket, transmits: &[Transmit]) -> Sent {
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

/// Datagrams read in one `recvmmsg` call at most.
pub const RECEIVE_BATCH: usize = 16;
/// Larger than any datagram a WebRTC peer sends (they stay under the path MTU).
const RECEIVE_SLOT: usize = 2048;
/// Slots are cut from blocks this large; the packets cut from one block share it.
const RECEIVE_BLOCK: usize = 64 * 1024;

/// The buffers the next datagrams are read into.
#[derive(Debug, Default)]
pub struct ReceiveSlots {
    slots: Vec<BytesMut>,
    block: BytesMut,
}

impl ReceiveSlots {
    fn fill(&mut self) {
        while self.slots.len() < RECEIVE_BATCH {
            if self.block.len() < RECEIVE_SLOT {
                self.block = BytesMut::zeroed(RECEIVE_BLOCK);
            }
            self.slots.push(self.block.split_to(RECEIVE_SLOT));
        }
    }
}

/// Reads what is waiting on `socket`, up to [`RECEIVE_BATCH`] datagrams in one call, handing
/// `each` every datagram with its sender; the number read (`WouldBlock` when none was waiting).
pub fn receive(
    socket: &UdpSocket,
    slots: &mut ReceiveSlots,
    mut each: impl FnMut(Bytes, SocketAddr),
) -> io::Result<usize> {
    slots.fill();
    let fd = socket.as_raw_fd();
    let buffers = &mut slots.slots;
    // Headers and the lengths read live for the call only (raw pointers, as for sends).
    let read: Vec<(usize, Option<SocketAddr>)> = socket.try_io(Interest::READABLE, || {
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(RECEIVE_BATCH, None);
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let results = recvmmsg(fd, &mut headers, &mut slices, MsgFlags::MSG_DONTWAIT, None)
            .map_err(io::Error::from)?;
        Ok(results
            .map(|r| (r.bytes, r.address.as_ref().and_then(socket_addr)))
            .collect())
    })?;
    let count = read.len();
    for (mut slot, (len, source)) in slots.slots.drain(..count).zip(read) {
        if let Some(source) = source {
            slot.truncate(len);
            each(slot.freeze(), source);
        }
    }
    Ok(count)
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    match address.family()? {
        nix::sys::socket::AddressFamily::Inet => address
            .as_sockaddr_in()
            .map(|v4| SocketAddr::V4((*v4).into())),
        nix::sys::socket::AddressFamily::Inet6 => address
            .as_sockaddr_in6()
            .map(|v6| SocketAddr::V6((*v6).into())),
        _ => None,
    }
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

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// `(destination port, size)` of each datagram, cut into runs.
    fn runs(datagrams: &[(u16, usize)]) -> Vec<Range<usize>> {
        let transmits: Vec<Transmit> = datagrams
            .iter()
            .map(|(port, size)| transmit(addr(1), addr(*port), &vec![0; *size]))
            .collect();
        segment_runs(&transmits).collect()
    }

    #[test]
    fn a_run_is_one_destinations_datagrams_in_a_row_each_the_first_ones_size_but_the_last() {
        // A frame's packets to a, one to b, a's again: three runs.
        assert_eq!(
            runs(&[(2, 1200), (2, 1200), (2, 700), (3, 1200), (2, 1200)]),
            [0..3, 3..4, 4..5]
        );
        // A shorter datagram ends its run; a larger one starts the next.
        assert_eq!(
            runs(&[(2, 1000), (2, 999), (2, 999), (2, 1000), (2, 1200)]),
            [0..2, 2..3, 3..4, 4..5]
        );
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn a_run_stops_at_the_kernels_segment_and_byte_limits() {
        let small = vec![(2, 100); MAX_SEGMENTS + 1];
        assert_eq!(
            runs(&small),
            [0..MAX_SEGMENTS, MAX_SEGMENTS..MAX_SEGMENTS + 1]
        );
        let big = vec![(2, 1200); 60];
        let fit = MAX_SEGMENTED_BYTES / 1200;
        assert_eq!(runs(&big), [0..fit, fit..60]);
    }

    async fn bound() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.expect("bind")
    }

    /// What each socket receives, in order, until none is waiting.
    async fn received(sockets: &[&UdpSocket], from: SocketAddr) -> Vec<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for socket in sockets {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(Ok((n, source))) = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                socket.recv_from(&mut buf),
            )
            .await
            {
                assert_eq!(source, from);
                got.push(buf[..n].to_vec());
            }
            out.push(got);
        }
        out
    }

    #[tokio::test]
    async fn one_call_delivers_each_datagram_to_its_own_subscriber_intact() {
        let (node, a, b) = (bound().await, bound().await, bound().await);
        let from = node.local_addr().expect("addr");
        let (to_a, to_b) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        let batch = [
            transmit(from, to_a, b"first for a"),
            transmit(from, to_b, b"for b"),
            transmit(from, to_a, b"second for a"),
        ];
        // The runtime learns the socket is writable on its first turn, as in the node.
        node.writable().await.expect("writable");
        let sent = send(&node, &batch, &mut Segmentation::probe(&node));
        assert_eq!(
            sent,
            Sent {
                datagrams: 3,
                bytes: 11 + 5 + 12,
                dropped: 0,
                segmented: 0,
            }
        );
        assert_eq!(
            received(&[&a, &b], from).await,
            [
                vec![b"first for a".to_vec(), b"second for a".to_vec()],
                vec![b"for b".to_vec()]
            ]
        );
    }

    #[tokio::test]
    async fn a_subscribers_run_is_cut_by_the_kernel_into_the_datagrams_it_was_made_of() {
        let (node, a, b) = (bound().await, bound().await, bound().await);
        let from = node.local_addr().expect("addr");
        let (to_a, to_b) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        // A keyframe's packets to a (the last one shorter), one to b, then a's next frame.
        let frame: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; if i == 4 { 300 } else { 1200 }])
            .collect();
        let mut batch: Vec<Transmit> = frame.iter().map(|p| transmit(from, to_a, p)).collect();
        batch.push(transmit(from, to_b, &[9; 1200]));
        batch.push(transmit(from, to_a, &[7; 800]));
        let mut segmentation = Segmentation::probe(&node);
        assert_ne!(
            segmentation,
            Segmentation::off(),
            "this kernel should know UDP_SEGMENT (Linux 4.18 and later)"
        );
        node.writable().await.expect("writable");
        let sent = send(&node, &batch, &mut segmentation);
        assert_eq!(sent.datagrams, 7);
        assert_eq!(sent.segmented, 5, "the keyframe's run went as one buffer");
        assert_eq!(sent.dropped, 0);
        assert_ne!(segmentation, Segmentation::off(), "the kernel took it");
        let mut for_a = frame.clone();
        for_a.push(vec![7; 800]);
        assert_eq!(
            received(&[&a, &b], from).await,
            [for_a, vec![vec![9; 1200]]]
        );
    }

    #[tokio::test]
    async fn with_segmentation_off_the_same_run_goes_datagram_by_datagram() {
        let node = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let from = node.local_addr().expect("addr");
        let to_a = a.local_addr().expect("addr");
        let batch: Vec<Transmit> = (0..4u8).map(|i| transmit(from, to_a, &[i; 1000])).collect();
        node.writable().await.expect("writable");
        let sent = send(&node, &batch, &mut Segmentation::off());
        assert_eq!((sent.datagrams, sent.segmented), (4, 0));
        let expected: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
        assert_eq!(received(&[&a], from).await, [expected]);
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
        let sent = send(&node, &many, &mut Segmentation::probe(&node));
        assert_eq!(sent.datagrams, SEND_BATCH);
        assert_eq!(sent.dropped, 0, "only one batch is looked at: {sent:?}");
    }

    #[tokio::test]
    async fn one_read_takes_every_waiting_datagram_with_its_sender_each_in_its_own_buffer() {
        let node = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let to = node.local_addr().expect("addr");
        for i in 0..RECEIVE_BATCH as u8 + 2 {
            let from = if i % 2 == 0 { &a } else { &b };
            from.send_to(&vec![i; 100 + usize::from(i)], to)
                .await
                .expect("send");
        }
        let mut slots = ReceiveSlots::default();
        let mut got = Vec::new();
        node.readable().await.expect("readable");
        let first = receive(&node, &mut slots, |packet, from| got.push((packet, from)));
        assert_eq!(
            first.expect("read"),
            RECEIVE_BATCH,
            "one call, a full batch"
        );
        let second = receive(&node, &mut slots, |packet, from| got.push((packet, from)));
        assert_eq!(second.expect("read"), 2, "the rest");
        for (i, (packet, from)) in got.iter().enumerate() {
            let sender = if i % 2 == 0 { &a } else { &b };
            assert_eq!(*from, sender.local_addr().expect("addr"));
            assert_eq!(
                packet[..],
                vec![i as u8; 100 + i][..],
                "datagram {i} intact"
            );
        }
        let none = receive(&node, &mut slots, |_, _| panic!("nothing was sent"));
        assert_eq!(none.map_err(|e| e.kind()), Err(ErrorKind::WouldBlock));
    }
}
