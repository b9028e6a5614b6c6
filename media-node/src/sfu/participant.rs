//! One participant: its str0m connection, the tracks it publishes and the tracks it receives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::bwe::Bitrate;
use str0m::change::SdpPendingOffer;
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::net::Protocol;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, StreamTx, Vp8Descriptor};
use tokio::sync::mpsc;

use super::QUALITY;
use super::congestion::{EgressLink, Gate, QueueGate};
use super::recovery::{LIFT_QUEUE_ABOVE, Recovery, Reset};
use super::rewrite::{Incoming, Rewriter, starts_keyframe};
use super::simulcast::{LayerRate, Layers, Selection};
use crate::protocol::{PROTOCOL_VERSION, ServerMessage, TrackKind};
use bedside_crds::join::Role;

/// How long a participant whose network dropped keeps their place once ICE declared the path
/// dead (str0m does after about 22 s without answers): a path that comes back (a phone that
/// switched networks, a Wi-Fi that roamed) resumes the call instead of ending it.
pub const ICE_GRACE: Duration = Duration::from_secs(10);
/// Tracks one participant may publish: camera audio and video, screen video and audio.
pub const MAX_PUBLISHED_TRACKS: usize = 4;
/// ICE candidates a client may send for one connection: browsers gather a handful (host,
/// server-reflexive, relay, per interface and family); more is a flood.
pub const MAX_REMOTE_CANDIDATES: usize = 32;

/// Node-assigned, opaque, never the user id from the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A keyframe request is relayed to a publisher at most this often per track.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
/// How far back a subscriber's lost video packets are sent again (NACK). A packet asked for
/// later than this would arrive after the browser played past it (its jitter buffer holds a few
/// hundred milliseconds); str0m's default keeps 3 s, which made the history most of a
/// subscriber's memory (docs/benchmarks.md).
const RTX_HISTORY: Duration = Duration::from_secs(1);
const RTX_PACKETS: usize = 1024;
/// Queued resends are dropped when resends pass this share of what a stream sends. str0m's
/// default, 15%, stopped repairing a link that loses a fifth of its packets (resends are then
/// about 17% of the stream) and the picture froze; 30% repairs up to about two packets in
/// five while a link in collapse still cannot double its load.
const RTX_RATIO_CAP: Option<f32> = Some(0.3);

/// A subscriber's video stream keeps a history of what it sent, for resends, from here on;
/// what it held before is dropped (a new history is a fresh one).
fn fresh_history(stream: &mut StreamTx) {
    stream.set_rtx_cache(RTX_PACKETS, RTX_HISTORY, RTX_RATIO_CAP);
}

/// How long what waits in video stream `mid`'s send queue takes to leave: its oldest
/// packet's age, or longer when the node writes faster than the pacer sends
/// (`EgressLink::drain_time`).
fn send_queue_wait(rtc: &mut Rtc, link: &EgressLink, mid: Mid, now: Instant) -> Duration {
    let mut api = rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(mid, None) else {
        return Duration::ZERO;
    };
    let queue = stream.queue_info();
    let age = queue
        .and_then(|q| q.first_unsent())
        .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
    let drain = queue.and_then(|q| link.drain_time(mid, q.byte_size()));
    age.max(drain.unwrap_or_default())
}

/// Sets a subscriber's bandwidth estimator to `reset`'s rate (`recovery.rs`): str0m starts a
/// fresh one there (its start-up probes measure the link from it), the layers are chosen for
/// that rate meanwhile (`estimate_bps`), and its own estimate is read again. Takes the
/// participant's parts, not the participant: the packet path holds its `rtc` while it lifts.
pub fn reset_estimator(
    rtc: &mut Rtc,
    recovery: &mut Recovery,
    estimate_bps: &mut Option<u64>,
    id: ParticipantId,
    reset: Reset,
) {
    rtc.bwe().reset(Bitrate::bps(reset.bps()));
    recovery.estimator_reset();
    *estimate_bps = Some(reset.bps());
    tracing::debug!(target: QUALITY, participant = %id, ?reset, "estimator reset");
}

/// [`fresh_history`] for the outgoing stream `mid` of a connection, if it has one.
fn fresh_history_of(rtc: Option<&mut Rtc>, mid: Mid) {
    let mut api = rtc.map(|rtc| rtc.direct_api());
    if let Some(stream) = api.as_mut().and_then(|a| a.stream_tx_by_mid(mid, None)) {
        fresh_history(stream);
    }
}

#[derive(Debug)]
pub struct TrackIn {
    pub mid: Mid,
    pub kind: MediaKind,
    /// The publisher's screen share (declared with `share` before its offer).
    pub screen: bool,
    pub layers: Layers,
    /// All of the track, layers together: what a non-simulcast subscriber receives.
    pub total: LayerRate,
    /// When a keyframe was last asked of each layer (`None`: a single encoding). Per layer: a
    /// subscriber whose link fills asks for its current layer's keyframe (a lossy spell began)
    /// and, at once, for the lower layer's it moves to.
    last_keyframe_requests: Vec<(Option<Rid>, Instant)>,
    /// Moves on with each packet the node holds back (a mute, a stopped share), so the packets
    /// forwarded after a pause are a new run: its subscribers' streams go on with no gap their
    /// receivers would count as loss and ask to have resent.
    run: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackOutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

#[derive(Debug)]
pub struct TrackOut {
    pub source: ParticipantId,
    pub source_mid: Mid,
    pub kind: MediaKind,
    /// A screen share: its stream id is `<publisher>-screen`, so clients show it apart.
    pub screen: bool,
    pub state: TrackOutState,
    pub selection: Selection,
    /// Media bytes written to this track's stream so far (beside what str0m says it sent).
    pub written: u64,
    /// Keeps the subscriber's stream continuous across the layers it is fed from.
    pub rewriter: Rewriter,
    /// Holds video back while the subscriber's send queue is too deep.
    pub gate: QueueGate,
}

impl TrackOut {
    pub fn mid(&self) -> Option<Mid> {
        match self.state {
            TrackOutState::ToOpen => None,
            TrackOutState::Negotiating(m)
            | TrackOutState::Open(m)
            | TrackOutState::ToStop(m)
            | TrackOutState::NegotiatingStop(m) => Some(m),
        }
    }
}

/// One RTP packet a publisher sent, with what its subscribers' side needs to know of it.
#[derive(Debug)]
pub struct MediaPacket {
    pub mid: Mid,
    pub rid: Option<Rid>,
    pub kind: MediaKind,
    pub params: PayloadParams,
    /// The first packet of a keyframe: where a subscriber may switch to this layer.
    pub keyframe: bool,
    pub vp8: Option<Vp8Descriptor>,
    /// Which of the track's runs between pauses the node imposed this packet belongs to.
    pub run: u32,
    /// As it arrived, decrypted; the payload is shared by every subscriber's stream and
    /// retransmission history (`Arc<[u8]>`), never copied.
    pub packet: RtpPacket,
}

impl MediaPacket {
    /// The header extensions a subscriber gets as the publisher set them; the others (MID,
    /// RID, transport-wide sequence numbers, send times) are the subscriber's connection's own.
    fn carried_extensions(&self) -> ExtensionValues {
        let from = &self.packet.header.ext_vals;
        ExtensionValues {
            audio_level: from.audio_level,
            voice_activity: from.voice_activity,
            video_orientation: from.video_orientation,
            video_content_type: from.video_content_type,
            abs_capture_time: from.abs_capture_time,
            ..ExtensionValues::default()
        }
    }
}

/// What one participant's output means for the others.
// Boxing the media variant would allocate once per packet on the forwarding path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Propagated {
    TrackOpened {
        source: ParticipantId,
        mid: Mid,
        kind: MediaKind,
        screen: bool,
    },
    Media {
        source: ParticipantId,
        media: MediaPacket,
    },
    KeyframeRequest {
        source: ParticipantId,
        source_mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    },
    /// A chat message for the rest of the room: relayed, never stored.
    Chat {
        source: ParticipantId,
        text: std::sync::Arc<str>,
    },
}

/// The longest chat message, in bytes of UTF-8.
pub const MAX_CHAT_BYTES: usize = 2_000;
/// At most this many chat messages per participant per [`CHAT_WINDOW`].
pub const MAX_CHAT_MESSAGES: usize = 20;
pub const CHAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a chat message was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRefusal {
    TooLong,
    TooFast,
    NotText,
}

/// Chat limits for one participant: size and rate (a sliding window of send times).
#[derive(Debug, Default)]
pub struct ChatLimits {
    sent: std::collections::VecDeque<Instant>,
}

impl ChatLimits {
    /// Whether `data` may go out at `now`; the text if so.
    pub fn check(
        &mut self,
        data: &[u8],
        binary: bool,
        now: Instant,
    ) -> Result<String, ChatRefusal> {
        if binary {
            return Err(ChatRefusal::NotText);
        }
        if data.len() > MAX_CHAT_BYTES {
            return Err(ChatRefusal::TooLong);
        }
        let text = std::str::from_utf8(data).map_err(|_| ChatRefusal::NotText)?;
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= CHAT_WINDOW)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= MAX_CHAT_MESSAGES {
            return Err(ChatRefusal::TooFast);
        }
        self.sent.push_back(now);
        Ok(text.to_string())
    }
}

/// One outgoing RTP stream: its m-line and simulcast layer.
type StreamKey = (Mid, Option<Rid>);

/// What forwarding one packet to one subscriber did.
#[derive(Debug, Default)]
pub struct Forward {
    pub written: bool,
    /// The subscriber moved to another simulcast layer with this packet.
    pub switched: bool,
    /// This was the subscriber's first media: how long its join took.
    pub join_took: Option<std::time::Duration>,
    pub keyframe_request: Option<Propagated>,
    /// The subscriber's send queue got too deep with this packet: its video is held back
    /// (`congestion::QueueGate`) until the queue drains.
    pub hold_began: bool,
    /// Its estimate was lifted to what its layers carry, its video waiting in the send queue
    /// on a link that loses nothing (`Recovery::backlogged`).
    pub lifted: Option<Reset>,
}

#[derive(Debug)]
pub struct Participant {
    pub id: ParticipantId,
    pub room: std::sync::Arc<str>,
    pub role: Role,
    /// What the participant typed; shown to the room, kept nowhere else.
    pub display_name: Option<crate::protocol::DisplayName>,
    /// The token's pseudonymous user id (expelling bars the user, not the connection).
    pub user: String,
    /// In the room (not the waiting room): media may flow.
    pub admitted: bool,
    /// A host muted this participant: their audio is not forwarded.
    pub muted: bool,
    /// Last media or signaling from this participant, for the idle timeout.
    pub last_activity: Instant,
    /// The m-line the client declared as its screen share, and whether a host stopped it.
    pub share_mid: Option<Mid>,
    pub share_stopped: bool,
    /// The client's `bedside` data channel, which carries chat.
    pub chat_channel: Option<str0m::channel::ChannelId>,
    pub chat_limits: ChatLimits,
    pub events: mpsc::Sender<ServerMessage>,
    pub rtc: Option<Rtc>,
    pub pending: Option<SdpPendingOffer>,
    pub tracks_in: Vec<TrackIn>,
    pub tracks_out: Vec<TrackOut>,
    /// Where the browser's packets came from: a UDP address, or an ICE-TCP connection.
    pub remote_addrs: Vec<(Protocol, SocketAddr)>,
    /// The transport of the browser's latest packet: the path its call uses.
    pub path: Option<Protocol>,
    /// Where the node sent its last packet before media connected: the nominated pair.
    pub sent_to: Option<SocketAddr>,
    /// The addresses of the browser's `relay` candidates: media from one of them came
    /// through the tenant's TURN relay.
    pub relay_candidates: Vec<SocketAddr>,
    /// Media connected through the relay: its bytes are counted as relayed.
    pub relayed: bool,
    /// The browser may use a TURN relay (the node hands one out).
    pub may_relay: bool,
    /// The browser sent its end-of-candidates: every `relay` candidate is known.
    pub candidates_done: bool,
    /// When media connected, while its path is not known yet (see [`Participant::path_known`]).
    pub unreported_since: Option<Instant>,
    pub next_timeout: Option<Instant>,
    pub connected: bool,
    /// When ICE declared the browser's path dead; cleared when ICE finds one again.
    pub ice_lost_since: Option<Instant>,
    /// The last datagram from the browser: str0m may stay "disconnected" on a path that came
    /// back, while its packets flow again.
    pub last_heard: Instant,
    /// Latest egress bandwidth estimate, bits per second.
    pub estimate_bps: Option<u64>,
    /// What this subscriber's outgoing video carried and lost: a full link caps the estimate
    /// before the averaged estimate follows.
    pub egress_link: EgressLink,
    /// Whether a collapse of its estimate restarts the estimator.
    pub recovery: Recovery,
    /// The budget (estimate, capped by `egress_link`) the layers were last chosen for.
    pub chosen_for_bps: Option<u64>,
    /// What the lowest simulcast layers of the video it receives need, with headroom: an
    /// estimate under it starves the pacer (`Recovery::starved`). 0 while it receives no
    /// simulcast video.
    pub floor_bps: u64,
    /// The estimate at which the video it receives moves up a layer; `None` while all of it
    /// is at its best (`Recovery::stagnant`).
    pub up_bps: Option<u64>,
    /// A probe for the move up is asked (`Recovery::probe_up`): the next layer choice asks
    /// str0m for no more than the estimate, so that the one after, asking for what the layers
    /// want again, is a rise, which str0m probes for.
    pub probe_dip: bool,
    /// What the layers it receives now carry, with headroom for headers, resends and audio:
    /// an estimate under it while their video waits in the send queue is lifted to it
    /// (`Recovery::backlogged`). 0 while it receives no video.
    pub carry_bps: u64,
    /// Its link got worse since the layers were chosen (the estimate fell well below that
    /// budget, or the link filled): they are chosen again at once, not at the next round.
    pub link_worse: bool,
    pub joined_at: Instant,
    /// Set once the first media packet went to or came from this participant.
    pub first_media_seen: bool,
    /// Set when the signaling channel is too slow to keep up; the engine removes it.
    pub overflowed: bool,
    /// ICE candidates taken from the client ([`MAX_REMOTE_CANDIDATES`] at most per ICE
    /// session: an ICE restart starts a new budget).
    pub remote_candidates: usize,
    /// The `a=ice-ufrag` of the client's latest offer: a new one is an ICE restart.
    pub remote_ufrag: Option<String>,
    /// Cumulative NACK/PLI/FIR counts per outgoing stream, as last reported by str0m.
    feedback_seen: Vec<(StreamKey, [u64; 3])>,
}

/// The longest media-connected waits for the browser's `relay` candidates.
pub const PATH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Participant {
    /// Whether the path media connected over can be told: the browser was given no relay, or
    /// it has sent all its candidates, or media comes from one of its `relay` candidates. A
    /// browser's checks through the relay can reach the node before the candidate itself
    /// arrives over signaling; waiting (at most [`PATH_WAIT`]) keeps a relayed call off the
    /// record as `udp`.
    pub fn path_known(&self) -> bool {
        !self.may_relay
            || self.candidates_done
            || self
                .sent_to
                .is_some_and(|peer| self.relay_candidates.contains(&peer))
    }

    /// ICE declared the path dead and nothing came from the browser for [`ICE_GRACE`] since:
    /// the participant is gone, not on a blip.
    pub fn network_lost(&self, now: Instant) -> bool {
        self.ice_lost_since
            .is_some_and(|since| now >= since.max(self.last_heard) + ICE_GRACE)
    }

    pub fn new(
        id: ParticipantId,
        room: std::sync::Arc<str>,
        role: Role,
        events: mpsc::Sender<ServerMessage>,
        now: Instant,
    ) -> Self {
        Self {
            id,
            room,
            role,
            display_name: None,
            user: String::new(),
            admitted: false,
            muted: false,
            last_activity: now,
            share_mid: None,
            share_stopped: false,
            chat_channel: None,
            chat_limits: ChatLimits::default(),
            events,
            rtc: None,
            pending: None,
            tracks_in: Vec::new(),
            tracks_out: Vec::new(),
            remote_addrs: Vec::new(),
            sent_to: None,
            relay_candidates: Vec::new(),
            relayed: false,
            may_relay: false,
            candidates_done: false,
            unreported_since: None,
            path: None,
            next_timeout: None,
            connected: false,
            ice_lost_since: None,
            last_heard: now,
            estimate_bps: None,
            egress_link: EgressLink::default(),
            recovery: Recovery::default(),
            chosen_for_bps: None,
            floor_bps: 0,
            up_bps: None,
            probe_dip: false,
            carry_bps: 0,
            link_worse: false,
            joined_at: now,
            first_media_seen: false,
            overflowed: false,
            remote_candidates: 0,
            remote_ufrag: None,
            feedback_seen: Vec::new(),
        }
    }

    /// Takes the ICE username fragment of the client's offer; true when it differs from the
    /// previous offer's: the browser restarted ICE (its network changed or dropped), and its
    /// new candidates get a budget of their own.
    pub fn ice_restarted(&mut self, ufrag: Option<&str>) -> bool {
        let Some(ufrag) = ufrag else {
            return false;
        };
        let restarted = self.remote_ufrag.as_deref().is_some_and(|old| old != ufrag);
        if restarted {
            self.remote_candidates = 0;
        }
        self.remote_ufrag = Some(ufrag.to_owned());
        restarted
    }

    /// New NACK/PLI/FIR counts since the last report for one outgoing stream.
    pub fn feedback_delta(&mut self, mid: Mid, rid: Option<Rid>, now: [u64; 3]) -> [u64; 3] {
        match self
            .feedback_seen
            .iter_mut()
            .find(|(k, _)| *k == (mid, rid))
        {
            Some((_, last)) => {
                let delta = [0, 1, 2].map(|i| now[i].saturating_sub(last[i]));
                *last = now;
                delta
            }
            None => {
                self.feedback_seen.push(((mid, rid), now));
                now
            }
        }
    }

    /// Queues a message for the participant's signaling connection without ever waiting: a
    /// client that stops reading is dropped rather than slowing the media loop.
    pub fn tell(&mut self, message: ServerMessage) {
        if self.events.try_send(message).is_err() {
            self.overflowed = true;
        }
    }

    /// How the others see this participant.
    pub fn info(&self) -> crate::protocol::ParticipantInfo {
        crate::protocol::ParticipantInfo {
            id: self.id.to_string(),
            role: self.role,
            display_name: self.display_name.clone(),
        }
    }

    pub fn may_publish(&self) -> bool {
        self.role != Role::Observer
    }

    /// A publisher's new track: remembered so others can subscribe.
    pub fn media_added(
        &mut self,
        mid: Mid,
        kind: MediaKind,
        direction: Direction,
        now: Instant,
    ) -> Option<Propagated> {
        // The node receives what the client sends; observers publish nothing.
        if !matches!(direction, Direction::RecvOnly | Direction::SendRecv) || !self.may_publish() {
            return None;
        }
        // A client adding tracks without end would have every subscriber's connection
        // renegotiated for each: a camera, a microphone and a screen share are all there is.
        if self.tracks_in.iter().any(|t| t.mid == mid)
            || self.tracks_in.len() >= MAX_PUBLISHED_TRACKS
        {
            return None;
        }
        let screen = self.share_mid == Some(mid);
        self.tracks_in.push(TrackIn {
            mid,
            kind,
            screen,
            layers: Layers::default(),
            total: LayerRate::new(Rid::from("*"), now),
            last_keyframe_requests: Vec::new(),
            run: 0,
        });
        Some(Propagated::TrackOpened {
            source: self.id,
            mid,
            kind,
            screen,
        })
    }

    /// The first media to or from this participant: the end of its join, as a user feels it.
    /// Returns how long the join took, once.
    pub fn first_media(&mut self, now: Instant) -> Option<std::time::Duration> {
        if self.first_media_seen {
            return None;
        }
        self.first_media_seen = true;
        Some(now.saturating_duration_since(self.joined_at))
    }

    /// An RTP packet of this participant's own tracks, for the others in the room.
    pub fn rtp_in(&mut self, packet: RtpPacket, now: Instant) -> Option<Propagated> {
        if !self.may_publish() {
            return None;
        }
        let rtc = self.rtc.as_mut()?;
        let header = &packet.header;
        let params = *rtc.codec_config().find(|p| p.pt() == header.payload_type)?;
        let (mid, rid) = rtc
            .direct_api()
            .stream_rx(&header.ssrc)
            .map(|s| (s.mid(), s.rid()))?;
        let track = self.tracks_in.iter_mut().find(|t| t.mid == mid)?;
        if (self.muted && track.kind == MediaKind::Audio) || (track.screen && self.share_stopped) {
            track.run = track.run.wrapping_add(1);
            return None;
        }
        let bytes = packet.payload.len();
        match rid {
            Some(rid) => track.layers.record(rid, bytes, now),
            None => track.total.record(bytes, now),
        }
        let codec = params.spec().codec;
        let video = track.kind == MediaKind::Video;
        let media = MediaPacket {
            mid,
            rid,
            kind: track.kind,
            params,
            keyframe: video && starts_keyframe(codec, &packet.payload),
            vp8: (codec == str0m::format::Codec::Vp8)
                .then(|| Vp8Descriptor::parse(&packet.payload).ok())
                .flatten(),
            run: track.run,
            packet,
        };
        Some(Propagated::Media {
            source: self.id,
            media,
        })
    }

    /// Asks this participant (as publisher) for a keyframe, throttled per track.
    pub fn request_keyframe(
        &mut self,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
        now: Instant,
    ) {
        let Some(track) = self.tracks_in.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let last = track
            .last_keyframe_requests
            .iter()
            .position(|(r, _)| *r == rid);
        if let Some(i) = last
            && now.saturating_duration_since(track.last_keyframe_requests[i].1)
                < KEYFRAME_REQUEST_INTERVAL
        {
            return;
        }
        let Some(rtc) = self.rtc.as_mut() else {
            return;
        };
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, rid) else {
            return;
        };
        stream.request_keyframe(kind);
        tracing::debug!(target: QUALITY, publisher = %self.id, %mid, ?rid, ?kind, "keyframe asked");
        match last {
            Some(i) => track.last_keyframe_requests[i].1 = now,
            None => track.last_keyframe_requests.push((rid, now)),
        }
    }

    /// Another participant published a track: this one will receive it after renegotiation.
    pub fn subscribe(
        &mut self,
        source: ParticipantId,
        source_mid: Mid,
        kind: MediaKind,
        screen: bool,
    ) {
        if self
            .tracks_out
            .iter()
            .any(|t| t.source == source && t.source_mid == source_mid)
        {
            return;
        }
        self.tracks_out.push(TrackOut {
            source,
            source_mid,
            kind,
            screen,
            state: TrackOutState::ToOpen,
            selection: Selection::default(),
            written: 0,
            rewriter: Rewriter::default(),
            gate: QueueGate::default(),
        });
    }

    /// The source left: stop its tracks here.
    pub fn unsubscribe_all_from(&mut self, source: ParticipantId) {
        self.tracks_out
            .retain(|t| !(t.source == source && t.state == TrackOutState::ToOpen));
        for track in self.tracks_out.iter_mut().filter(|t| t.source == source) {
            track.state = match track.state {
                TrackOutState::Negotiating(m) | TrackOutState::Open(m) => TrackOutState::ToStop(m),
                other => other,
            };
        }
    }

    /// Forwards one packet of `source`'s track as it came, renumbered into this subscriber's
    /// stream, and asks the source for a keyframe when a layer switch waits for one. No
    /// allocation: the payload is shared (`Arc<[u8]>`).
    pub fn forward(&mut self, source: ParticipantId, media: &MediaPacket, now: Instant) -> Forward {
        let mut out = Forward::default();
        let Some(rtc) = self.rtc.as_mut() else {
            return out;
        };
        let Some(track) = self
            .tracks_out
            .iter_mut()
            .find(|t| t.source == source && t.source_mid == media.mid)
        else {
            return out;
        };
        let TrackOutState::Open(mid) = track.state else {
            return out;
        };
        let before = track.selection.current;
        let admitted = track.selection.admit(media.rid, media.keyframe, now);
        out.switched = before.is_some() && before != track.selection.current;
        if track.selection.wants_keyframe() {
            out.keyframe_request = Some(Propagated::KeyframeRequest {
                source,
                source_mid: track.source_mid,
                rid: track.selection.target,
                kind: KeyframeRequestKind::Fir,
            });
        }
        if !admitted {
            return out;
        }
        let Some(pt) = rtc
            .codec_config()
            .match_params(media.params)
            .map(|p| p.pt())
        else {
            return out;
        };
        let packet = &media.packet;
        let incoming = Incoming {
            ssrc: packet.header.ssrc,
            run: media.run,
            seq: *packet.seq_no,
            timestamp: packet.header.timestamp,
            arrived: packet.timestamp,
            clock_rate: media.params.spec().clock_rate.get(),
            vp8: media.vp8,
        };
        // A keyframe of this packet's layer, asked of its publisher.
        let pli = |source_mid| Propagated::KeyframeRequest {
            source,
            source_mid,
            rid: media.rid,
            kind: KeyframeRequestKind::Pli,
        };
        if media.kind == MediaKind::Video && !media.keyframe && track.rewriter.resumes(&incoming) {
            // Video the node held back (a stopped share) goes on from a keyframe: what follows
            // the pause cannot be decoded without what was held back, and the receiver would
            // only find that out and ask for a keyframe itself, a round trip later.
            out.keyframe_request = Some(pli(track.source_mid));
            return out;
        }
        let mut waited = Duration::ZERO;
        if media.kind == MediaKind::Video {
            waited = send_queue_wait(rtc, &self.egress_link, mid, now);
            // A queue the pacer builds on a link that loses nothing: its pace is lifted to
            // what the layers carry before the queue is deep enough to hold the video.
            let lift = (waited >= LIFT_QUEUE_ABOVE && !track.gate.held())
                .then(|| {
                    let loss = self.egress_link.recent_loss(now);
                    let estimate = self.estimate_bps.unwrap_or(0);
                    self.recovery
                        .backlogged(estimate, self.carry_bps, waited, loss, now)
                })
                .flatten();
            if let Some(lift) = lift {
                tracing::debug!(target: QUALITY, participant = %self.id, ?waited, "send queue under a low estimate");
                let (recovery, estimate) = (&mut self.recovery, &mut self.estimate_bps);
                reset_estimator(rtc, recovery, estimate, self.id, lift);
                // What drained at the old pace says nothing of the new one.
                self.egress_link.pacer_reset();
                out.lifted = Some(lift);
                waited = send_queue_wait(rtc, &self.egress_link, mid, now);
            }
        }
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return out;
        };
        if media.kind == MediaKind::Video {
            // The receiver decodes from this keyframe on: what came before it is not resent
            // (see `forget_resends`).
            if out.switched {
                fresh_history(stream);
            }
            match track.gate.admit(waited, media.keyframe) {
                Gate::Write => {}
                Gate::WriteAfterHold => {
                    tracing::debug!(target: QUALITY, participant = %self.id, %mid, "hold ended");
                    track.rewriter.restart();
                    fresh_history(stream);
                }
                Gate::Hold {
                    began,
                    keyframe_wanted,
                } => {
                    // The link carries less than this layer: its layers are chosen again.
                    out.hold_began = began;
                    self.link_worse |= began;
                    if began {
                        self.egress_link.queue_held(mid, now);
                    }
                    if keyframe_wanted {
                        out.keyframe_request = Some(pli(track.source_mid));
                    }
                    return out;
                }
            }
        }
        let Some(place) = track.rewriter.rewrite(&incoming) else {
            return out;
        };
        let mut write = RtpWrite::new(
            pt,
            place.seq.into(),
            place.timestamp,
            packet.timestamp,
            packet.payload.clone(),
        )
        .marker(packet.header.marker)
        .ext_vals(media.carried_extensions())
        // Lost audio is better concealed than resent late.
        .nackable(media.kind == MediaKind::Video);
        if let Some(patch) = place.vp8 {
            write = write.vp8_patch(patch);
        }
        stream.write_rtp(write);
        track.written += packet.payload.len() as u64;
        out.written = true;
        out.join_took = self.first_media(now);
        out
    }

    /// A subscriber's PLI/FIR on one of its outgoing tracks, mapped to the publisher's track.
    pub fn keyframe_wanted(&self, mid: Mid, kind: KeyframeRequestKind) -> Option<Propagated> {
        let track = self.tracks_out.iter().find(|t| t.mid() == Some(mid))?;
        Some(Propagated::KeyframeRequest {
            source: track.source,
            source_mid: track.source_mid,
            rid: track.selection.current.or(track.selection.target),
            kind,
        })
    }

    /// The keyframe a subscriber's video stream `mid` should start again from after its link
    /// lost more than retransmission repairs (`congestion::Restart`); none while a layer
    /// switch waits for one (asked for already).
    pub fn restart_video(&self, mid: Mid) -> Option<Propagated> {
        let track = self.tracks_out.iter().find(|t| t.mid() == Some(mid))?;
        if track.selection.wants_keyframe() {
            return None;
        }
        self.keyframe_wanted(mid, KeyframeRequestKind::Pli)
    }

    /// Starts an offer for tracks to add or stop, when no other negotiation is in flight; the
    /// offer goes to the client via `tell`.
    pub fn negotiate_if_needed(&mut self) {
        let Some(rtc) = self.rtc.as_mut() else {
            return;
        };
        if self.pending.is_some() {
            return;
        }
        let mut change = rtc.sdp_api();
        let mut added = Vec::new();
        for track in &mut self.tracks_out {
            match track.state {
                TrackOutState::ToOpen => {
                    let mid = change.add_media(
                        track.kind,
                        Direction::SendOnly,
                        // The stream id tells the client whose camera (or screen) this is.
                        Some(if track.screen {
                            format!("{}-screen", track.source)
                        } else {
                            track.source.to_string()
                        }),
                        None,
                        None,
                    );
                    track.state = TrackOutState::Negotiating(mid);
                    added.push((track.source, track.kind, mid));
                }
                TrackOutState::ToStop(mid) => {
                    self.egress_link.forget(mid);
                    change.stop_media(mid);
                    track.state = TrackOutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        if !change.has_changes() {
            return;
        }
        let Some((offer, pending)) = change.apply() else {
            return;
        };
        self.pending = Some(pending);
        for (source, kind, mid) in added {
            self.tell(ServerMessage::TrackAdded {
                v: PROTOCOL_VERSION,
                participant_id: source.to_string(),
                kind: match kind {
                    MediaKind::Audio => TrackKind::Audio,
                    MediaKind::Video => TrackKind::Video,
                },
                mid: mid.to_string(),
            });
        }
        self.tell(ServerMessage::Offer {
            v: PROTOCOL_VERSION,
            sdp: offer.to_sdp_string(),
        });
    }

    /// The client sent a new offer while ours was in flight: str0m drops ours, so redo it after.
    pub fn reset_negotiation(&mut self) {
        self.pending = None;
        for track in &mut self.tracks_out {
            track.state = match track.state {
                TrackOutState::Negotiating(_) => TrackOutState::ToOpen,
                TrackOutState::NegotiatingStop(m) => TrackOutState::ToStop(m),
                other => other,
            };
        }
    }

    /// The client answered our offer: newly opened tracks, which need a keyframe to start.
    pub fn negotiation_done(&mut self) -> Vec<(ParticipantId, Mid)> {
        let mut opened = Vec::new();
        for track in &mut self.tracks_out {
            if let TrackOutState::Negotiating(m) = track.state {
                track.state = TrackOutState::Open(m);
                if track.kind == MediaKind::Video {
                    opened.push((track.source, track.source_mid));
                    // Made by this answer, so the history is set before anything is sent.
                    fresh_history_of(self.rtc.as_mut(), m);
                }
            }
        }
        self.tracks_out
            .retain(|t| !matches!(t.state, TrackOutState::NegotiatingStop(_)));
        opened
    }

    /// A tile grew: while it was small the estimate settled at the small picture's rate, and
    /// str0m may hold its probes back for seconds when its congestion state says so (on a busy
    /// machine, 40 s once). The estimator starts again where a call starts, with its initial
    /// probes, as at join: a link that cannot carry it is found within a second or two.
    pub fn estimate_from_the_start(&mut self) {
        let start = crate::sfu::simulcast::TOP_LAYER_BPS;
        if self.estimate_bps.is_some_and(|e| e >= start) {
            return;
        }
        if let Some(rtc) = self.rtc.as_mut() {
            rtc.bwe().reset(str0m::bwe::Bitrate::bps(start));
            self.recovery.estimator_reset();
            self.estimate_bps = Some(start);
        }
    }

    /// Its link loses or holds back what the node sends it now (`congestion.rs`).
    pub fn link_full(&self, now: Instant) -> bool {
        self.egress_link.ceiling(now).is_some() || self.tracks_out.iter().any(|t| t.gate.held())
    }

    /// The subscriber moved down for its bandwidth on video stream `mid`: the old layer is
    /// no longer forwarded (`simulcast::DRAIN_AT_MOST`), and resending what was lost of it
    /// would take from the lower layer's keyframe on a link that is already full. Seen in
    /// Chromium on a 600 kbit/s link: 0.3-0.8 Mbit/s of the old layer's resends for a second
    /// after the switch, the new layer's keyframe lost behind them and the picture frozen.
    pub fn forget_resends(&mut self, mid: Mid) {
        fresh_history_of(self.rtc.as_mut(), mid);
    }

    /// The video tracks this participant receives, for layer choice.
    pub fn video_out(&mut self) -> impl Iterator<Item = &mut TrackOut> {
        self.tracks_out
            .iter_mut()
            .filter(|t| t.kind == MediaKind::Video && matches!(t.state, TrackOutState::Open(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_is_bounded_in_size_and_rate() {
        let mut limits = ChatLimits::default();
        let t0 = Instant::now();
        assert_eq!(limits.check(b"hello", false, t0), Ok("hello".to_string()));
        assert_eq!(
            limits.check(&[b'x'; MAX_CHAT_BYTES + 1], false, t0),
            Err(ChatRefusal::TooLong)
        );
        assert_eq!(
            limits.check(b"\xff\xfe", false, t0),
            Err(ChatRefusal::NotText)
        );
        assert_eq!(limits.check(b"bin", true, t0), Err(ChatRefusal::NotText));
        for _ in 1..MAX_CHAT_MESSAGES {
            assert!(limits.check(b"m", false, t0).is_ok());
        }
        assert_eq!(limits.check(b"m", false, t0), Err(ChatRefusal::TooFast));
        assert!(
            limits.check(b"m", false, t0 + CHAT_WINDOW).is_ok(),
            "the window slides"
        );
    }
}
