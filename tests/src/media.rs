//! Media-node harness: a node on loopback with keys made at test time, a signaling client,
//! and a test peer on the `webrtc` crate (an independent WebRTC stack, so the SFU is never
//! tested only against itself).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bedside_media_node::config;
use bedside_media_node::node::{self, NodeSetup, RunningNode};
use bedside_media_node::token::{self, JoinClaims, Role};
use futures::{SinkExt, StreamExt};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCSessionDescription, Registry,
    SettingEngineBuilder, SrtpProtectionProfile, register_default_interceptors,
};

/// A media node in this process, on 127.0.0.1 with ephemeral ports.
#[derive(Debug)]
pub struct TestNode {
    pub running: Option<RunningNode>,
    pub join_key: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub tenant: String,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(
        edit: impl FnOnce(&mut bedside_crds::node_config::MediaNodeConfig),
    ) -> TestNode {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let mut config = config::dev_default();
        config.tenant.name = "test-clinic".into();
        let loopback = std::net::Ipv4Addr::LOCALHOST;
        config.network.signaling_listen = (loopback, 0).into();
        config.network.media_listen = (loopback, 0).into();
        config.network.advertised_media_address = Some((loopback, 0).into());
        config.network.metrics_listen = (loopback, 0).into();
        edit(&mut config);
        let setup = NodeSetup::generated(config, "test-node".into()).expect("node material");
        let (join_key, cert_pem, tenant) = (
            setup.join_key.clone(),
            setup.tls.cert_pem.clone(),
            setup.config.tenant.name.clone(),
        );
        let running = node::start(setup).await.expect("the media node starts");
        TestNode {
            running: Some(running),
            join_key,
            cert_pem,
            tenant,
        }
    }

    fn running(&self) -> &RunningNode {
        self.running.as_ref().expect("node running")
    }

    pub fn signaling_url(&self) -> String {
        format!("wss://{}/ws", self.running().signaling)
    }

    pub fn https_base(&self) -> String {
        format!("https://{}", self.running().signaling)
    }

    /// A token for `room` signed with this node's key.
    pub fn token(&self, room: &str, user: &str, role: Role) -> String {
        sign(&self.tenant, &self.join_key, room, user, role, 600)
    }

    pub async fn metrics(&self) -> String {
        let addr = self.running().metrics;
        let mut stream = TcpStream::connect(addr).await.expect("metrics connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("metrics request");
        let mut body = String::new();
        stream
            .read_to_string(&mut body)
            .await
            .expect("metrics response");
        body
    }

    /// The value of a metric line that starts with `name`, summed over label sets.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn shutdown(&mut self, grace: Duration) {
        if let Some(running) = self.running.take() {
            running.shutdown(grace).await;
        }
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a join token; `lifetime_secs` may be negative for an expired one.
pub fn sign(
    tenant: &str,
    key: &[u8],
    room: &str,
    user: &str,
    role: Role,
    lifetime_secs: i64,
) -> String {
    let exp = (now_secs() as i64 + lifetime_secs).max(0) as u64;
    token::issue(
        &JoinClaims {
            sub: user.into(),
            aud: tenant.into(),
            room: room.into(),
            role,
            exp,
        },
        key,
    )
    .expect("sign a test token")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw signaling connection that trusts only the node's certificate.
#[derive(Debug)]
pub struct Signal {
    ws: Ws,
}

impl Signal {
    pub async fn connect(node: &TestNode) -> Signal {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(&node.cert_pem) {
            roots.add(cert).expect("trust the node's certificate");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            node.signaling_url(),
            None,
            true,
            Some(Connector::Rustls(Arc::new(client))),
        )
        .await
        .expect("signaling connects over TLS");
        Signal { ws }
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send a signaling message");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send a binary frame");
    }

    /// The next JSON message, or None when the node closed the connection.
    pub async fn recv(&mut self) -> Option<Value> {
        tokio::time::timeout(Duration::from_secs(15), self.recv_any())
            .await
            .expect("a signaling message within 15 s")
    }

    /// Like `recv`, without a deadline.
    pub async fn recv_any(&mut self) -> Option<Value> {
        loop {
            let next = self.ws.next().await?;
            match next {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(text.as_str()).expect("the node sends JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Reads until a message of `kind` arrives; panics on close.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let m = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("connection closed while waiting for {kind}"));
            if m["type"] == kind {
                return m;
            }
        }
    }

    pub async fn join(&mut self, room: &str, token: &str) -> Value {
        self.send(json!({"v": 1, "type": "join", "room": room, "token": token}))
            .await;
        self.recv().await.expect("a reply to join")
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// What a peer has received, by publishing participant id (the stream id the node sets).
#[derive(Debug, Default)]
pub struct Received {
    pub packets: HashMap<String, u64>,
    /// The first bytes of the last payload per publisher, to check whose media it is.
    pub last_payload: HashMap<String, Vec<u8>>,
}

#[derive(Clone)]
struct PeerHandler {
    received: Arc<Mutex<Received>>,
    gathered: mpsc::Sender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move {
            let stream = track.stream_id().await.to_string();
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let mut r = received.lock().expect("lock");
                    *r.packets.entry(stream.clone()).or_default() += 1;
                    let head = packet.payload.iter().take(16).copied().collect();
                    r.last_payload.insert(stream.clone(), head);
                }
            }
        });
    }
}

/// Options for a test peer.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    pub publish_audio: bool,
    /// SRTP profiles the peer offers; None = the stack's defaults.
    pub srtp_profiles: Option<Vec<SrtpProtectionProfile>>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            publish_audio: true,
            srtp_profiles: None,
        }
    }
}

/// A participant on the `webrtc` crate, joined through the node's signaling.
pub struct RustPeer {
    pub participant_id: String,
    pub received: Arc<Mutex<Received>>,
    /// Every signaling message after `joined`, in order.
    pub messages: Arc<Mutex<Vec<Value>>>,
    pc: Arc<dyn PeerConnection>,
    audio: Option<Arc<TrackLocalStaticRTP>>,
    audio_ssrc: u32,
    outgoing: mpsc::Sender<Value>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RustPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustPeer")
            .field("participant_id", &self.participant_id)
            .finish_non_exhaustive()
    }
}

const OPUS_PT: u8 = 111;

impl RustPeer {
    pub async fn join(node: &TestNode, room: &str, token: &str, options: PeerOptions) -> RustPeer {
        let mut signal = Signal::connect(node).await;
        let joined = signal.join(room, token).await;
        assert_eq!(joined["type"], "joined", "join refused: {joined}");
        let participant_id = joined["participantId"]
            .as_str()
            .expect("participant id")
            .to_string();

        let mut media = MediaEngine::default();
        media.register_default_codecs().expect("codecs");
        let registry =
            register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
        let mut settings = SettingEngineBuilder::new().with_include_loopback_candidate(true);
        if let Some(profiles) = options.srtp_profiles.clone() {
            settings = settings.with_srtp_protection_profiles(profiles);
        }
        let received = Arc::new(Mutex::new(Received::default()));
        let (gathered_tx, mut gathered) = mpsc::channel(1);
        let handler = Arc::new(PeerHandler {
            received: received.clone(),
            gathered: gathered_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            // Loopback only: never the machine's real interfaces.
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .expect("peer connection");
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let audio_ssrc = rand_u32();
        let audio = if options.publish_audio {
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                format!("stream-{participant_id}"),
                format!("audio-{participant_id}"),
                "audio".to_string(),
                RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(audio_ssrc),
                        ..Default::default()
                    },
                    codec: RTCRtpCodec {
                        mime_type: "audio/opus".into(),
                        clock_rate: 48_000,
                        channels: 2,
                        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                        rtcp_feedback: vec![],
                    },
                    ..Default::default()
                }],
            )));
            pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .expect("add the audio track");
            Some(track)
        } else {
            pc.create_data_channel("bedside", None)
                .await
                .expect("data channel");
            None
        };

        let offer = pc.create_offer(None).await.expect("offer");
        pc.set_local_description(offer).await.expect("local offer");
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await;
        let local = pc.local_description().await.expect("local description");
        signal
            .send(json!({"v": 1, "type": "offer", "sdp": local.sdp}))
            .await;

        let messages = Arc::new(Mutex::new(Vec::new()));
        let (outgoing, mut outgoing_rx) = mpsc::channel::<Value>(64);
        let pc_task = pc.clone();
        let log = messages.clone();
        let signaling = tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = signal.recv_any() => {
                        let Some(m) = m else { break };
                        log.lock().expect("lock").push(m.clone());
                        match m["type"].as_str() {
                            Some("answer") => {
                                let sdp = m["sdp"].as_str().unwrap_or_default().to_string();
                                let answer = RTCSessionDescription::answer(sdp).expect("answer sdp");
                                pc_task.set_remote_description(answer).await.expect("remote answer");
                            }
                            Some("offer") => {
                                let sdp = m["sdp"].as_str().unwrap_or_default().to_string();
                                let offer = RTCSessionDescription::offer(sdp).expect("offer sdp");
                                pc_task.set_remote_description(offer).await.expect("remote offer");
                                let answer = pc_task.create_answer(None).await.expect("answer");
                                pc_task.set_local_description(answer.clone()).await.expect("local answer");
                                signal.send(json!({"v": 1, "type": "answer", "sdp": answer.sdp})).await;
                            }
                            _ => {}
                        }
                    }
                    out = outgoing_rx.recv() => {
                        match out {
                            Some(Value::Null) | None => {
                                signal.close().await;
                                break;
                            }
                            Some(m) => signal.send(m).await,
                        }
                    }
                }
            }
        });

        RustPeer {
            participant_id,
            received,
            messages,
            pc,
            audio,
            audio_ssrc,
            outgoing,
            tasks: vec![signaling],
        }
    }

    /// Sends synthetic Opus packets every 20 ms whose payload names this participant.
    pub fn start_publishing(&mut self) {
        let Some(track) = self.audio.clone() else {
            return;
        };
        let tag = self.participant_id.clone();
        let ssrc = self.audio_ssrc;
        self.tasks.push(tokio::spawn(async move {
            let mut seq: u16 = rand_u32() as u16;
            let mut ts: u32 = rand_u32();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let mut payload = vec![0u8; 80];
                let id = format!("from:{tag};");
                payload[..id.len()].copy_from_slice(id.as_bytes());
                let packet = rtc::rtp::Packet {
                    header: rtc::rtp::Header {
                        version: 2,
                        payload_type: OPUS_PT,
                        sequence_number: seq,
                        timestamp: ts,
                        marker: false,
                        ssrc,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::from(payload),
                };
                // Errors before the connection is up are expected; keep the clock going.
                let _ = track.write_rtp(packet).await;
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(960);
            }
        }));
    }

    pub fn packets_from(&self, participant: &str) -> u64 {
        self.received
            .lock()
            .expect("lock")
            .packets
            .get(participant)
            .copied()
            .unwrap_or(0)
    }

    pub fn publishers_heard(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .received
            .lock()
            .expect("lock")
            .packets
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn last_payload_from(&self, participant: &str) -> Vec<u8> {
        self.received
            .lock()
            .expect("lock")
            .last_payload
            .get(participant)
            .cloned()
            .unwrap_or_default()
    }

    pub fn saw(&self, kind: &str) -> Vec<Value> {
        self.messages
            .lock()
            .expect("lock")
            .iter()
            .filter(|m| m["type"] == kind)
            .cloned()
            .collect()
    }

    pub async fn send(&self, message: Value) {
        let _ = self.outgoing.send(message).await;
    }

    /// Leaves the meeting: sends `leave`, closes signaling and media.
    pub async fn leave(self) {
        let _ = self.outgoing.send(json!({"v": 1, "type": "leave"})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = self.outgoing.send(Value::Null).await;
        let _ = self.pc.close().await;
        for task in self.tasks {
            task.abort();
        }
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs_fill(&mut b);
    u32::from_le_bytes(b)
}

fn aws_lc_rs_fill(buf: &mut [u8]) -> Result<(), ()> {
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| ())
}

/// Polls `check` every 100 ms until it holds or `within` passes; returns whether it held.
pub async fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}
