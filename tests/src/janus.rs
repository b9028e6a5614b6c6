//! Janus 1.1 (Debian's `janus`), the peer SFU the side-by-side benchmark runs bedside against:
//! a server started in the calling thread's network namespace, and peers on either of the load's
//! stacks (the `webrtc` crate's [`PeerMedia`], or the str0m [`LoadPeer`]) that publish to or
//! subscribe from its VideoRoom plugin over its WebSocket API.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::load_peer::{LoadPeer, Opening, Wiring};
use crate::media::{PeerMedia, PeerOptions, Received, VideoLoad};

const JANUS: &str = "/usr/bin/janus";
const WS_PORT: u16 = 8188;
/// Janus ends a session after 60 s without a request.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(20);

/// Why Janus cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !Path::new(JANUS).exists() {
        return Some(format!("{JANUS} is missing (apt-get install janus)"));
    }
    if modules_folder().is_none() {
        return Some("Janus's plugin folder (/usr/lib/*/janus/plugins) is missing".into());
    }
    None
}

/// Where Debian puts Janus's plugins and transports (`/usr/lib/<triplet>/janus`).
fn modules_folder() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("janus"))
        .find(|p| p.join("plugins/libjanus_videoroom.so").exists())
}

/// A Janus process with only the VideoRoom plugin and the WebSocket transport; killed on drop.
#[derive(Debug)]
pub struct JanusServer {
    child: Child,
    ws_url: String,
    dir: tempfile::TempDir,
}

impl JanusServer {
    /// Starts Janus with ICE and its API on `interface` at `ip`. Janus ignores loopback, so
    /// this is a veth end of the test's own namespace (`Netns::add_veth`).
    pub async fn start(interface: &str, ip: Ipv4Addr) -> JanusServer {
        let modules = modules_folder().expect("Janus's plugin folder");
        let dir = tempfile::tempdir().expect("tempdir");
        write_config(dir.path(), &modules, interface, ip);
        let log = std::fs::File::create(dir.path().join("janus.log")).expect("Janus's log");
        let child = Command::new(JANUS)
            .arg("-C")
            .arg(dir.path().join("janus.jcfg"))
            .arg("-F")
            .arg(dir.path())
            .args(["-N", "-o", "-L"])
            .arg(dir.path().join("janus.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {JANUS}: {e}"));
        for _ in 0..100 {
            if TcpStream::connect((ip, WS_PORT)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        JanusServer {
            child,
            ws_url: format!("ws://{ip}:{WS_PORT}/"),
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of Janus's log, for a failure message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("janus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for JanusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Janus's own files: its defaults, except every plugin but VideoRoom and every transport but
/// WebSockets switched off, and ICE held to `interface`.
fn write_config(dir: &Path, modules: &Path, interface: &str, ip: Ipv4Addr) {
    let others = |folder: &str, keep: &str| -> String {
        std::fs::read_dir(modules.join(folder))
            .map(|entries| {
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".so") && n != keep)
                    .collect();
                names.sort();
                names.join(",")
            })
            .unwrap_or_default()
    };
    let m = modules.display();
    let main = format!(
        "general: {{\n  configs_folder = \"{dir}\"\n  plugins_folder = \"{m}/plugins\"\n  \
         transports_folder = \"{m}/transports\"\n  events_folder = \"{m}/events\"\n  \
         loggers_folder = \"{m}/loggers\"\n  debug_level = 3\n}}\n\
         media: {{ rtp_port_range = \"20000-40000\" }}\n\
         nat: {{ ice_enforce_list = \"{interface}\" }}\n\
         plugins: {{ disable = \"{plugins}\" }}\n\
         transports: {{ disable = \"{transports}\" }}\n\
         loggers: {{ disable = \"{loggers}\" }}\n\
         events: {{ }}\n",
        dir = dir.display(),
        plugins = others("plugins", "libjanus_videoroom.so"),
        transports = others("transports", "libjanus_websockets.so"),
        loggers = others("loggers", ""),
    );
    let websockets = format!(
        "general: {{ json = \"plain\" ws = true ws_port = {WS_PORT} ws_ip = \"{ip}\" wss = false }}\n\
         admin: {{ admin_ws = false admin_wss = false }}\n"
    );
    for (name, text) in [
        ("janus.jcfg", main),
        ("janus.transport.websockets.jcfg", websockets),
        ("janus.plugin.videoroom.jcfg", "general: { }\n".into()),
    ] {
        std::fs::write(dir.join(name), text).expect("write Janus's config");
    }
}

/// One Janus session with one VideoRoom handle, over its own WebSocket.
struct Session {
    ws: WebSocketStream<TcpStream>,
    id: u64,
    handle: u64,
    transaction: u64,
}

impl Session {
    async fn open(server: &JanusServer) -> Session {
        let mut request = server.ws_url.as_str().into_client_request().expect("URL");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let host = request.uri().authority().expect("host").to_string();
        let stream = TcpStream::connect(host).await.expect("connect to Janus");
        let (ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("Janus's WebSocket");
        let mut session = Session {
            ws,
            id: 0,
            handle: 0,
            transaction: 0,
        };
        let created = session.call(json!({"janus": "create"})).await;
        session.id = created["data"]["id"].as_u64().expect("a session id");
        let attached = session
            .call(json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}))
            .await;
        session.handle = attached["data"]["id"].as_u64().expect("a handle id");
        session
    }

    /// Sends `request` and returns Janus's reply to it: its result, or the plugin's event for
    /// an asynchronous request (after Janus's `ack`). Panics on an error reply.
    async fn call(&mut self, mut request: Value) -> Value {
        self.transaction += 1;
        let transaction = self.transaction.to_string();
        request["transaction"] = json!(transaction);
        if self.id != 0 {
            request["session_id"] = json!(self.id);
        }
        if self.handle != 0 {
            request["handle_id"] = json!(self.handle);
        }
        self.ws
            .send(Message::Text(request.to_string().into()))
            .await
            .expect("send to Janus");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no reply from Janus to {request}"))
                .unwrap_or_else(|| panic!("Janus closed the WebSocket on {request}"))
                .expect("read from Janus");
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).expect("Janus speaks JSON");
            if reply["transaction"] != json!(transaction) || reply["janus"] == "ack" {
                continue;
            }
            let plugin_error = &reply["plugindata"]["data"]["error"];
            assert!(
                reply["janus"] != "error" && plugin_error.is_null(),
                "Janus refused {request}: {reply}"
            );
            return reply;
        }
    }

    /// Waits for Janus's notice `kind` (e.g. `webrtcup`: the handle's connection is up).
    async fn wait_for(&mut self, kind: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            let Message::Text(text) = message else {
                continue;
            };
            let notice: Value = serde_json::from_str(&text).unwrap_or_default();
            if notice["janus"] == kind {
                return true;
            }
        }
        false
    }

    /// Keeps the session alive and drains Janus's notices until the task is aborted.
    fn keep_alive(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEEPALIVE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        self.transaction += 1;
                        let keepalive = json!({"janus": "keepalive", "session_id": self.id,
                            "transaction": self.transaction.to_string()});
                        if self.ws.send(Message::Text(keepalive.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                    message = self.ws.next() => {
                        if !matches!(message, Some(Ok(_))) {
                            return;
                        }
                    }
                }
            }
        })
    }
}

/// The stack a Janus peer runs on.
#[derive(Debug, Clone)]
pub enum Stack {
    /// A `webrtc`-crate peer with these options (a publisher sends their video and audio).
    Webrtc(PeerOptions),
    /// A str0m load peer on a UDP port of this address; a publisher sends `VideoLoad`.
    Str0m(Ipv4Addr, VideoLoad),
}

#[derive(Debug)]
enum Media {
    Webrtc(PeerMedia),
    /// The load peer, and the channel that carried Janus's SDP to it: dropping it would close
    /// the connection.
    Str0m(LoadPeer, mpsc::UnboundedSender<Value>),
}

/// A peer in a Janus VideoRoom.
#[derive(Debug)]
pub struct JanusPeer {
    media: Media,
    /// The publisher's feed id (0 for a subscriber).
    pub feed: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl JanusPeer {
    /// Creates `room` (a room of one publisher, VP8 and Opus) and publishes into it on
    /// `stack`; the media starts flowing at once.
    pub async fn publish(server: &JanusServer, room: u64, stack: &Stack) -> JanusPeer {
        let mut session = Session::open(server).await;
        session
            .call(
                json!({"janus": "message", "body": {"request": "create", "room": room,
                "publishers": 1, "videocodec": "vp8", "audiocodec": "opus"}}),
            )
            .await;
        let name = format!("janus-{room}");
        let (mut media, offer) = match stack {
            Stack::Webrtc(options) => {
                let mut media = PeerMedia::new(&name, options).await;
                let offer = media.offer().await;
                (Media::Webrtc(media), offer)
            }
            Stack::Str0m(ip, load) => {
                let (peer, wiring) = LoadPeer::start(*ip, &name, Opening::Publish(*load)).await;
                let offer = wiring.offer.clone().expect("a publisher makes an offer");
                (Media::Str0m(peer, wiring.from_sfu), offer)
            }
        };
        let joined = session
            .call(json!({"janus": "message",
                "body": {"request": "joinandconfigure", "room": room, "ptype": "publisher"},
                "jsep": {"type": "offer", "sdp": offer, "trickle": false}}))
            .await;
        let feed = joined["plugindata"]["data"]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("Janus gave the publisher no feed id: {joined}"));
        let answer = joined["jsep"]["sdp"]
            .as_str()
            .unwrap_or_else(|| panic!("Janus sent no answer: {joined}"))
            .to_string();
        let mut tasks = Vec::new();
        match &mut media {
            Media::Webrtc(media) => {
                media.accept_answer(answer).await;
                tasks.extend(media.publish_video());
            }
            Media::Str0m(_, to_peer) => {
                let _ = to_peer.send(json!({"type": "answer", "sdp": answer}));
            }
        }
        // Subscribers can join a feed only once its connection is up.
        if !session.wait_for("webrtcup", Duration::from_secs(10)).await {
            panic!(
                "the publisher's connection to Janus did not come up; Janus's log:\n{}",
                server.log_tail()
            );
        }
        tasks.push(session.keep_alive());
        if let Media::Webrtc(media) = &media {
            tasks.extend(media.publish_audio(name));
        }
        JanusPeer { media, feed, tasks }
    }

    /// Subscribes to `feed` in `room` on `stack`: Janus offers, this peer answers.
    pub async fn subscribe(server: &JanusServer, room: u64, feed: u64, stack: &Stack) -> JanusPeer {
        let mut session = Session::open(server).await;
        let attached = session
            .call(
                json!({"janus": "message", "body": {"request": "join", "room": room,
                "ptype": "subscriber", "streams": [{"feed": feed}]}}),
            )
            .await;
        let offer = attached["jsep"]["sdp"]
            .as_str()
            .unwrap_or_else(|| panic!("Janus sent the subscriber no offer: {attached}"))
            .to_string();
        let name = format!("janus-sub-{room}");
        let (media, answer) = match stack {
            Stack::Webrtc(options) => {
                let mut media = PeerMedia::new(&name, options).await;
                let answer = media.answer(offer).await;
                (Media::Webrtc(media), answer)
            }
            Stack::Str0m(ip, _) => {
                let (peer, wiring) = LoadPeer::start(*ip, &name, Opening::AwaitOffer).await;
                let (answer, to_peer) = answer_offer(wiring, offer).await;
                (Media::Str0m(peer, to_peer), answer)
            }
        };
        session
            .call(json!({"janus": "message", "body": {"request": "start"},
                "jsep": {"type": "answer", "sdp": answer, "trickle": false}}))
            .await;
        JanusPeer {
            media,
            feed: 0,
            tasks: vec![session.keep_alive()],
        }
    }

    /// Stamped video packets handed to the stack.
    pub fn video_sent(&self) -> &AtomicU64 {
        match &self.media {
            Media::Webrtc(media) => &media.video_sent,
            Media::Str0m(peer, _) => &peer.video_sent,
        }
    }

    pub fn received(&self) -> &Mutex<Received> {
        match &self.media {
            Media::Webrtc(media) => &media.received,
            Media::Str0m(peer, _) => &peer.received,
        }
    }

    pub async fn leave(self) {
        for task in self.tasks {
            task.abort();
        }
        match self.media {
            Media::Webrtc(media) => {
                let _ = media.pc.close().await;
            }
            Media::Str0m(peer, _) => peer.leave().await,
        }
    }
}

/// Hands a load peer Janus's `offer`; its answer, and the channel to keep.
async fn answer_offer(mut wiring: Wiring, offer: String) -> (String, mpsc::UnboundedSender<Value>) {
    let _ = wiring.from_sfu.send(json!({"type": "offer", "sdp": offer}));
    let answer = tokio::time::timeout(Duration::from_secs(10), wiring.to_sfu.recv())
        .await
        .ok()
        .flatten()
        .expect("the load peer answers Janus's offer");
    let sdp = answer["sdp"].as_str().expect("an answer's SDP").to_string();
    (sdp, wiring.from_sfu)
}
