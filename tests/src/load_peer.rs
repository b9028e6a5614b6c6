//! A load-generator peer on str0m in its RTP mode: it joins through the node's signaling like
//! any client (or through another SFU's, given a [`Wiring`]: Janus in the side-by-side
//! benchmark), sends prepared VP8 packets or receives them, and does no more per packet than
//! a WebRTC endpoint must (SRTP, NACK, receiver reports, congestion feedback). One task per
//! peer, no frame assembly, no interceptor chain: many of them cost the generator a fraction
//! of what the `webrtc`-crate peers cost, so at large scenarios the node saturates first.
//!
//! It reports into the same [`Received`] as `RustPeer`, so the benchmarks read both alike.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::media::{Received, Signal, TestNode, VideoLoad};

/// A participant of the load, joined through the node's signaling.
pub struct LoadPeer {
    pub participant_id: String,
    pub received: Arc<Mutex<Received>>,
    /// Stamped video packets handed to the stack.
    pub video_sent: Arc<AtomicU64>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LoadPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadPeer")
            .field("participant_id", &self.participant_id)
            .finish_non_exhaustive()
    }
}

/// A peer whose SFU's signaling is carried by someone else (the node's, or Janus's in the
/// side-by-side benchmark): the offer it made, if any, and the channels to it.
#[derive(Debug)]
pub struct Wiring {
    /// Our offer, to hand the SFU; `None` for a peer that waits for the SFU's offer.
    pub offer: Option<String>,
    /// The SFU's answer or offer, as `{"type": "answer" | "offer", "sdp": ...}`. Dropping it
    /// closes the connection.
    pub from_sfu: mpsc::UnboundedSender<Value>,
    /// Our answers to the SFU's offers, in the same shape; closed once the peer has stopped.
    pub to_sfu: mpsc::UnboundedReceiver<Value>,
}

/// What a peer offers first, if anything.
#[derive(Debug, Clone, Copy)]
pub enum Opening {
    /// Sends `VideoLoad` on a track it offers.
    Publish(VideoLoad),
    /// Offers a data channel (as a browser does) and receives what the SFU adds.
    OfferChannel,
    /// Offers nothing: receives what the SFU offers.
    AwaitOffer,
}

impl LoadPeer {
    /// Joins `room`, then sends `video` (a publisher) or receives what the room sends (a
    /// subscriber, with a data channel to offer). Panics when the node refuses.
    pub async fn join(
        node: &TestNode,
        room: &str,
        token: &str,
        video: Option<VideoLoad>,
    ) -> LoadPeer {
        let mut signal = Signal::connect(node).await;
        let joined = signal.join(room, token).await;
        assert_eq!(joined["type"], "joined", "join refused: {joined}");
        let participant_id = joined["participantId"]
            .as_str()
            .expect("participant id")
            .to_string();
        let opening = video.map_or(Opening::OfferChannel, Opening::Publish);
        let (peer, wiring) = LoadPeer::start(Ipv4Addr::LOCALHOST, &participant_id, opening).await;
        if let Some(offer) = &wiring.offer {
            signal
                .send(json!({"v": 1, "type": "offer", "sdp": offer}))
                .await;
        }
        tokio::spawn(relay(signal, wiring));
        peer
    }

    /// A peer on a UDP port of `ip`, before any signaling: `name` is the stream id of the
    /// track it publishes. Its media starts once the [`Wiring`] has carried the SFU's answer.
    pub async fn start(ip: Ipv4Addr, name: &str, opening: Opening) -> (LoadPeer, Wiring) {
        let socket = UdpSocket::bind((ip, 0)).await.expect("a UDP port");
        let local = socket.local_addr().expect("local address");
        let mut rtc = RtcConfig::new().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("a host candidate"));
        let mut change = rtc.sdp_api();
        let mut sender = None;
        match opening {
            Opening::Publish(load) => {
                let mid = change.add_media(
                    MediaKind::Video,
                    Direction::SendOnly,
                    Some(name.to_string()),
                    None,
                    None,
                );
                sender = Some(VideoSender::new(load, mid));
            }
            Opening::OfferChannel => {
                change.add_channel("bedside".into());
            }
            Opening::AwaitOffer => {}
        }
        let (offer, pending) = change.apply().unzip();

        let received = Arc::new(Mutex::new(Received::default()));
        let video_sent = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let (from_sfu, from_sfu_rx) = mpsc::unbounded_channel();
        let (to_sfu_tx, to_sfu) = mpsc::unbounded_channel();
        let session = Session {
            rtc,
            socket,
            local,
            pending,
            publishers: HashMap::new(),
            by_ssrc: HashMap::new(),
            received: received.clone(),
            video_sent: video_sent.clone(),
        };
        let task = tokio::spawn(session.run(from_sfu_rx, to_sfu_tx, sender, stopped));
        let peer = LoadPeer {
            participant_id: name.to_string(),
            received,
            video_sent,
            stop,
            task,
        };
        let wiring = Wiring {
            offer: offer.map(|o| o.to_sdp_string()),
            from_sfu,
            to_sfu,
        };
        (peer, wiring)
    }

    /// Leaves the room and closes the connection.
    pub async fn leave(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Prepared VP8 packets at a constant rate, one stamped frame per packet.
struct VideoSender {
    load: VideoLoad,
    mid: Mid,
    seq: u64,
    sent: u64,
    started: Instant,
}

impl VideoSender {
    fn new(load: VideoLoad, mid: Mid) -> Self {
        VideoSender {
            load,
            mid,
            // Below 2^16: the receiver's rollover counter starts at zero.
            seq: u64::from(crate::media::rand_u32() as u16),
            sent: 0,
            started: Instant::now(),
        }
    }

    /// Writes the next packet; false before the connection can take it.
    fn write(&mut self, rtc: &mut Rtc, now: Instant) -> bool {
        let Some(pt) = rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
        else {
            return false;
        };
        let payload = self.load.payload(self.sent);
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(self.mid, None) else {
            return false;
        };
        // 90 kHz, advanced by real time so frame times stay plausible.
        let time =
            (now.saturating_duration_since(self.started).as_micros() as u64 * 9 / 100) as u32;
        stream.write_rtp(
            RtpWrite::new(pt, self.seq.into(), time, now, payload)
                .marker(true)
                .nackable(true),
        );
        self.seq += 1;
        self.sent += 1;
        true
    }
}

/// One peer's connection, driven by its task.
struct Session {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    /// Our own offer, until the SFU answers it.
    pending: Option<SdpPendingOffer>,
    /// Whose media each of the SFU's m-lines carries (its `msid` stream id).
    publishers: HashMap<Mid, String>,
    by_ssrc: HashMap<Ssrc, String>,
    received: Arc<Mutex<Received>>,
    video_sent: Arc<AtomicU64>,
}

impl Session {
    async fn run(
        mut self,
        mut from_sfu: mpsc::UnboundedReceiver<Value>,
        to_sfu: mpsc::UnboundedSender<Value>,
        mut sender: Option<VideoSender>,
        mut stopped: oneshot::Receiver<()>,
    ) {
        let mut buf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(
            sender
                .as_ref()
                .map_or(Duration::from_secs(3600), |s| s.load.interval()),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            let Some(deadline) = self.drain() else {
                return;
            };
            let deadline = tokio::time::Instant::from_std(deadline);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = received else { return };
                    self.receive(&buf[..n], source);
                    // Whatever else arrived meanwhile. Each packet is polled out before the
                    // next goes in: in RTP mode str0m holds one received packet for the next
                    // poll, and a second input would replace it.
                    while let Ok((n, source)) = self.socket.try_recv_from(&mut buf) {
                        if self.drain().is_none() {
                            return;
                        }
                        self.receive(&buf[..n], source);
                    }
                }
                message = from_sfu.recv() => {
                    // Closed: the SFU's signaling is gone.
                    let Some(message) = message else {
                        self.rtc.disconnect();
                        return;
                    };
                    if let Some(answer) = self.signaled(&message) {
                        let _ = to_sfu.send(json!({"type": "answer", "sdp": answer}));
                    }
                }
                _ = &mut stopped => {
                    self.rtc.disconnect();
                    return;
                }
                _ = tick.tick(), if sender.is_some() => {
                    if let Some(sender) = sender.as_mut()
                        && sender.write(&mut self.rtc, Instant::now())
                    {
                        self.video_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Sends what the connection has to send and handles its events; when it next needs
    /// time, or `None` once it is closed.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return Some(at),
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer drops the datagram, as a busy link would.
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::RtpPacket(packet))) => self.count(&packet),
                Ok(Output::Event(_)) => {}
                Err(_) => return None,
            }
        }
    }

    fn receive(&mut self, datagram: &[u8], source: SocketAddr) {
        let Ok(contents) = datagram.try_into() else {
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        let _ = self.rtc.handle_input(input);
    }

    /// The SFU's answer to our offer, or its offer (returns our answer).
    fn signaled(&mut self, message: &Value) -> Option<String> {
        let sdp = message["sdp"].as_str()?;
        match message["type"].as_str()? {
            "answer" => {
                let answer = SdpAnswer::from_sdp_string(sdp).expect("the SFU's answer is SDP");
                let pending = self.pending.take()?;
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .expect("the SFU's answer fits the offer");
                None
            }
            "offer" => {
                self.publishers.extend(stream_ids(sdp));
                let offer = SdpOffer::from_sdp_string(sdp).expect("the SFU's offer is SDP");
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .expect("the SFU's offer is acceptable");
                Some(answer.to_sdp_string())
            }
            _ => None,
        }
    }

    /// One received packet, by publisher; stamped ones with their delay.
    fn count(&mut self, packet: &str0m::rtp::RtpPacket) {
        let ssrc = packet.header.ssrc;
        if !self.by_ssrc.contains_key(&ssrc) {
            let mid = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
            let publisher = mid.and_then(|m| self.publishers.get(&m)).cloned();
            self.by_ssrc.insert(ssrc, publisher.unwrap_or_default());
        }
        if let Ok(mut r) = self.received.lock() {
            r.count(&self.by_ssrc[&ssrc], &packet.payload);
        }
    }
}

/// The node's signaling for one peer, on a task of its own so the media loop waits on channels
/// and not on the WebSocket (whose read buffer is set up anew each time a read starts). Once
/// the peer has stopped (its answers' channel closes) it leaves the room.
async fn relay(mut signal: Signal, mut wiring: Wiring) {
    loop {
        tokio::select! {
            message = signal.recv_any() => {
                let Some(message) = message else { break };
                if wiring.from_sfu.send(message).is_err() {
                    break;
                }
            }
            answer = wiring.to_sfu.recv() => {
                let Some(mut answer) = answer else {
                    signal.send(json!({"v": 1, "type": "leave"})).await;
                    break;
                };
                answer["v"] = json!(1);
                signal.send(answer).await;
            }
        }
    }
    signal.close().await;
}

/// Each m-line's mid and the stream id of its `msid` (the node names the publisher there).
fn stream_ids(sdp: &str) -> Vec<(Mid, String)> {
    sdp.split("\nm=")
        .skip(1)
        .filter_map(|section| {
            let attr = |name: &str| {
                section
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(name).map(str::to_string))
            };
            let mid = attr("a=mid:")?;
            let stream = attr("a=msid:")?.split_whitespace().next()?.to_string();
            Some((Mid::from(mid.as_str()), stream))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publisher_of_each_m_line_is_read_from_its_msid() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:17 abc\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:23-screen def\r\na=mid:2\r\n";
        assert_eq!(
            stream_ids(sdp),
            vec![
                (Mid::from("1"), "17".to_string()),
                (Mid::from("2"), "23-screen".to_string())
            ]
        );
    }
}
