//! Media-node harness: a node on loopback with keys made at test time, a signaling client,
//! and a test peer on the `webrtc` crate (an independent WebRTC stack, so the SFU is never
//! tested only against itself).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bedside_crds::join::{self, JoinClaims, Role};
use bedside_media_node::config;
use bedside_media_node::node::{self, NodeSetup, RunningNode};
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

/// Media loops of an in-process test node.
pub const TEST_NODE_LOOPS: u16 = 2;

/// Two room names that a test node holds on different media loops.
pub fn rooms_on_different_loops(prefix: &str) -> (String, String) {
    use bedside_media_node::sfu::shard::loop_for_room;
    let loops = usize::from(TEST_NODE_LOOPS);
    let first = format!("{prefix}-a");
    let on_first = loop_for_room(&first, loops);
    let second = (0..)
        .map(|n| format!("{prefix}-b{n}"))
        .find(|room| loop_for_room(room, loops) != on_first)
        .expect("some name lands on another loop");
    (first, second)
}

/// A media node on 127.0.0.1 with ephemeral ports: in this process (tests) or as the
/// release binary in its own process (benchmarks, so its CPU can be read from /proc).
#[derive(Debug)]
pub struct TestNode {
    pub running: Option<RunningNode>,
    pub process: Option<std::process::Child>,
    pub signaling: std::net::SocketAddr,
    pub metrics_addr: std::net::SocketAddr,
    pub join_key: Vec<u8>,
    pub audit_key: Vec<u8>,
    /// Where the node writes its audit records (in-process nodes).
    pub audit_file: Option<std::path::PathBuf>,
    pub cert_pem: Vec<u8>,
    pub tenant: String,
    _files: Option<tempfile::TempDir>,
}

/// What an in-process node logs in a test unless `RUST_LOG` says otherwise: warnings, and its
/// picture decisions (`bedside::quality`, no PHI), so a browser test that fails on the picture
/// it got prints them with its output and a failure seen once in CI can be read rather than
/// guessed at.
pub const TEST_LOG: &str = "warn,bedside::quality=debug";

/// Logs this process's events (an in-process node's among them) to the test output, filtered by
/// `RUST_LOG`, or by `default` without it. The first call wins: a benchmark that calls it
/// before its first [`TestNode`] keeps its own output to its figures.
pub fn log_by_default(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_test_writer()
        .try_init();
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(
        edit: impl FnOnce(&mut bedside_crds::node_config::MediaNodeConfig),
    ) -> TestNode {
        Self::start_custom(edit, |_| {}).await
    }

    /// Like `start_with`, and `edit_setup` may change the resolved setup (e.g. a webhook CA).
    pub async fn start_custom(
        edit: impl FnOnce(&mut bedside_crds::node_config::MediaNodeConfig),
        edit_setup: impl FnOnce(&mut NodeSetup),
    ) -> TestNode {
        log_by_default(TEST_LOG);
        let mut config = config::dev_default();
        config.tenant.name = "test-clinic".into();
        let loopback = std::net::Ipv4Addr::LOCALHOST;
        config.network.signaling_listen = (loopback, 0).into();
        config.network.media_listen = (loopback, 0).into();
        config.network.advertised_media_address = Some((loopback, 0).into());
        config.network.metrics_listen = (loopback, 0).into();
        // Two media loops whatever the machine: every suite goes through the routing of rooms
        // and packets over loops (`sfu::shard`).
        config.network.media_loops = Some(TEST_NODE_LOOPS);
        let files = tempfile::tempdir().expect("tempdir");
        let audit_file = files.path().join("audit.jsonl");
        config.audit.buffer_dir = files.path().join("audit-buffer");
        edit(&mut config);
        let mut setup = NodeSetup::generated(config, "test-node".into()).expect("node material");
        setup.audit_file = Some(audit_file.clone());
        edit_setup(&mut setup);
        let (join_key, audit_key, cert_pem, tenant) = (
            setup.join_key.clone(),
            setup.audit_key.clone(),
            setup.tls.cert_pem.clone(),
            setup.config.tenant.name.clone(),
        );
        let running = node::start(setup).await.expect("the media node starts");
        TestNode {
            signaling: running.signaling,
            metrics_addr: running.metrics,
            running: Some(running),
            process: None,
            join_key,
            audit_key,
            audit_file: Some(audit_file),
            cert_pem,
            tenant,
            _files: Some(files),
        }
    }

    /// A node some other harness runs (a pod in a cluster), reached at `signaling` with the
    /// tenant's certificate and keys.
    pub fn remote(
        signaling: std::net::SocketAddr,
        cert_pem: Vec<u8>,
        tenant: &str,
        join_key: Vec<u8>,
        audit_key: Vec<u8>,
    ) -> TestNode {
        TestNode {
            running: None,
            process: None,
            signaling,
            metrics_addr: signaling,
            join_key,
            audit_key,
            audit_file: None,
            cert_pem,
            tenant: tenant.into(),
            _files: None,
        }
    }

    /// Runs `binary run --config FILE` with files written to a temporary directory; fixed
    /// ports are picked free first because the process cannot report ephemeral ones.
    pub async fn spawn(binary: &std::path::Path) -> TestNode {
        Self::spawn_with_loops(binary, None).await
    }

    /// Like `spawn`, running `loops` media loops (`None`: the node's default, one per CPU).
    pub async fn spawn_with_loops(binary: &std::path::Path, loops: Option<u16>) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let material = NodeSetup::generated(config::dev_default(), "bench-node".into())
            .expect("node material");
        // Every simulated client comes from loopback: one network, as far as the node's
        // per-network limits go, so a load generator lifts them.
        let mut node = Self::spawn_in(binary, dir.path(), &material, "warn", |c| {
            let limits = &mut c.network.client_limits;
            limits.join_attempts_per_minute = 1_000_000;
            limits.connections_per_network = limits.connections;
            c.network.media_loops = loops;
        })
        .await;
        node._files = Some(dir);
        node
    }

    /// Like `spawn`, with the node's files (config, keys, audit buffer; stdout.log with the
    /// audit records, stderr.log with the log at `log_filter`) in `dir` and its key material
    /// from `material`, so a test can start the same node again after killing it.
    pub async fn spawn_in(
        binary: &std::path::Path,
        dir: &std::path::Path,
        material: &NodeSetup,
        log_filter: &str,
        edit: impl FnOnce(&mut bedside_crds::node_config::MediaNodeConfig),
    ) -> TestNode {
        Self::spawn_in_env(binary, dir, material, log_filter, &[], edit).await
    }

    /// Like `spawn_in`, with extra environment variables for the process (e.g. `SSL_CERT_FILE`
    /// naming a test CA that a webhook sink's certificate chains to).
    pub async fn spawn_in_env(
        binary: &std::path::Path,
        dir: &std::path::Path,
        material: &NodeSetup,
        log_filter: &str,
        env: &[(&str, &std::ffi::OsStr)],
        edit: impl FnOnce(&mut bedside_crds::node_config::MediaNodeConfig),
    ) -> TestNode {
        let mut config = material.config.clone();
        config.tenant.name = "bench-clinic".into();
        let loopback = std::net::Ipv4Addr::LOCALHOST;
        let (signaling, media, metrics) = free_ports();
        config.network.signaling_listen = (loopback, signaling).into();
        config.network.media_listen = (loopback, media).into();
        config.network.advertised_media_address = Some((loopback, media).into());
        config.network.metrics_listen = (loopback, metrics).into();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write node file");
            path
        };
        config.tls.cert_file = write("tls.crt", &material.tls.cert_pem);
        config.tls.key_file = write("tls.key", &material.tls.key_pem);
        config.keys.join_token_key_file = write("join.key", &material.join_key);
        config.keys.audit_hmac_key_file = write("audit.key", &material.audit_key);
        config.audit.buffer_dir = dir.join("audit");
        edit(&mut config);
        let config_file = write("node.yaml", config.to_yaml().as_bytes());
        // stdout carries the stdout sink's audit records, stderr the log.
        let output = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .expect("an output file for the node")
        };
        let child = std::process::Command::new(binary)
            .args(["run", "--config"])
            .arg(&config_file)
            .env("RUST_LOG", log_filter)
            .env("POD_NAME", &material.node_name)
            .envs(env.iter().copied())
            .stdout(output("stdout.log"))
            .stderr(output("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let signaling_addr = std::net::SocketAddr::from((loopback, signaling));
        for _ in 0..100 {
            if TcpStream::connect(signaling_addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        TestNode {
            running: None,
            process: Some(child),
            signaling: signaling_addr,
            metrics_addr: (loopback, metrics).into(),
            join_key: material.join_key.clone(),
            audit_key: material.audit_key.clone(),
            audit_file: None,
            cert_pem: material.tls.cert_pem.clone(),
            tenant: config.tenant.name,
            _files: None,
        }
    }

    /// SIGKILL: the process gets no chance to flush or close anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The audit records written so far, one JSON line each.
    pub fn audit_lines(&self) -> Vec<String> {
        self.audit_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The node's process id (the test process itself when in-process).
    pub fn pid(&self) -> u32 {
        self.process
            .as_ref()
            .map(|c| c.id())
            .unwrap_or_else(std::process::id)
    }

    pub fn signaling_url(&self) -> String {
        format!("wss://{}/ws", self.signaling)
    }

    pub fn https_base(&self) -> String {
        format!("https://{}", self.signaling)
    }

    /// The meeting passcode of `room` (what the clinic sends the patient).
    pub fn passcode(&self, room: &str) -> String {
        join::passcode(&self.join_key, room)
    }

    /// The link a clinic sends (`join::link`, with the passcode), asking the web client for
    /// its low quality: two cores carry several browsers.
    pub fn link(&self, room: &str, token: &str) -> String {
        let passcode = self.passcode(room);
        join::link(&self.https_base(), room, token, Some(&passcode)).replacen(
            '#',
            "&quality=low#",
            1,
        )
    }

    /// A token for `room` signed with this node's key.
    pub fn token(&self, room: &str, user: &str, role: Role) -> String {
        sign(&self.tenant, &self.join_key, room, user, role, 600)
    }

    pub async fn metrics(&self) -> String {
        self.metrics_port_get("/metrics").await
    }

    /// The node's audit health report, as the operator reads it.
    pub async fn audit_health(&self) -> Value {
        let response = self.metrics_port_get("/audit/health").await;
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
    }

    /// A GET on the metrics port: the whole HTTP/1.1 response.
    async fn metrics_port_get(&self, path: &str) -> String {
        let addr = self.metrics_addr;
        let mut stream = TcpStream::connect(addr).await.expect("metrics connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
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
        self.metric_where(name, "").await
    }

    /// Like `metric`, over the series whose labels contain `label` (e.g. `reason="ice"`).
    pub async fn metric_where(&self, name: &str, label: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn shutdown(&mut self, grace: Duration) {
        if let Some(running) = self.running.take() {
            running.shutdown(grace).await;
        }
        if let Some(mut child) = self.process.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(child) = self.process.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Signaling, media and metrics ports for a node process, distinct, each free now: the media
/// port for UDP and for TCP both (the node takes ICE-TCP on its UDP port, and a port chosen
/// free for UDP alone may be another socket's TCP port, even this node's signaling one). The
/// sockets are held until all three are chosen.
fn free_ports() -> (u16, u16, u16) {
    let tcp = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
    let (signaling, metrics) = (tcp(), tcp());
    let media = (0..64)
        .find_map(|_| {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = udp.local_addr().ok()?.port();
            let _tcp = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
            Some(port)
        })
        .expect("a port free for both UDP and TCP");
    let port = |l: &std::net::TcpListener| l.local_addr().expect("bound").port();
    (port(&signaling), media, port(&metrics))
}

/// CPU time (user + system) a process has used so far, in seconds; `None` when /proc cannot
/// be read (the process is gone, or this is not Linux).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')':
    // utime and stime are the 12th and 13th of them.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux platform we run.
    Some((utime + stime) / 100.0)
}

/// A binary of this workspace, built beside the test executables (`cargo nextest run
/// --workspace` builds every member's binaries).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .expect("a target directory");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (make test does)",
        path.display()
    );
    path
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a join token as any issuer holding the key would (bedside's own `join::issue` refuses
/// some tokens the node must also refuse, such as a name as user id); `lifetime_secs` may be
/// negative for an expired one.
pub fn sign(
    tenant: &str,
    key: &[u8],
    room: &str,
    user: &str,
    role: Role,
    lifetime_secs: i64,
) -> String {
    let exp = (now_secs() as i64 + lifetime_secs).max(0) as u64;
    let claims = JoinClaims {
        sub: user.into(),
        aud: tenant.into(),
        room: room.into(),
        role,
        exp,
        nbf: None,
        start: None,
        generation: None,
        break_glass: None,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .expect("sign a test token")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw signaling connection that trusts only the node's certificate.
#[derive(Debug)]
pub struct Signal {
    /// The tenant's join key, from which meeting passcodes derive.
    passcode_key: Vec<u8>,
    ws: Ws,
}

impl Signal {
    pub async fn connect(node: &TestNode) -> Signal {
        Self::try_connect(node)
            .await
            .unwrap_or_else(|e| panic!("signaling connects over TLS: {e}"))
    }

    /// A connection that may fail (a pod that has just gone away).
    pub async fn try_connect(node: &TestNode) -> Result<Signal, String> {
        Self::try_connect_from(node, None).await
    }

    /// A connection from `source` (another loopback address stands for another network).
    pub async fn try_connect_from(
        node: &TestNode,
        source: Option<std::net::IpAddr>,
    ) -> Result<Signal, String> {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        if let Some(source) = source {
            socket.bind((source, 0).into()).map_err(|e| e.to_string())?;
        }
        let stream = socket
            .connect(node.signaling)
            .await
            .map_err(|e| e.to_string())?;
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
        let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
            node.signaling_url(),
            stream,
            None,
            Some(Connector::Rustls(Arc::new(client))),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Signal {
            ws,
            passcode_key: node.join_key.clone(),
        })
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

    /// Sends without insisting: the node may already be closing the connection.
    pub async fn try_send_text(&mut self, text: String) -> bool {
        self.ws.send(Message::Text(text.into())).await.is_ok()
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

    /// A join with the meeting's right passcode.
    pub async fn join(&mut self, room: &str, token: &str) -> Value {
        let passcode = join::passcode(&self.passcode_key, room);
        self.join_with(room, token, Some(&passcode)).await
    }

    /// A join with the given passcode, or none.
    pub async fn join_with(&mut self, room: &str, token: &str, passcode: Option<&str>) -> Value {
        let mut message = json!({"v": 1, "type": "join", "room": room, "token": token});
        if let Some(passcode) = passcode {
            message["passcode"] = json!(passcode);
        }
        self.send(message).await;
        self.recv().await.expect("a reply to join")
    }

    /// A join with the name the participant typed (and the right passcode).
    pub async fn join_as(&mut self, room: &str, token: &str, display_name: &str) -> Value {
        let passcode = join::passcode(&self.passcode_key, room);
        self.send(json!({"v": 1, "type": "join", "room": room, "token": token,
            "displayName": display_name, "passcode": passcode}))
            .await;
        self.recv().await.expect("a reply to join")
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The certificates in a PEM bundle.
pub fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
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
    /// The last few whole payloads per publisher, as the node forwarded them.
    pub recent_payloads: HashMap<String, std::collections::VecDeque<Vec<u8>>>,
    /// Stamped frames (load generator): count, first arrival, and send-to-receive latency.
    pub stamped: HashMap<String, u64>,
    pub first_stamped_at: HashMap<String, Instant>,
    pub latencies_us: Vec<u32>,
}

impl Received {
    /// One packet from `stream`'s publisher; a stamped one (the load generator's) with its
    /// delay. Whether it was stamped.
    pub(crate) fn count(&mut self, stream: &str, payload: &[u8]) -> bool {
        // Looked up before inserting: no key allocated per packet.
        let add = |counts: &mut HashMap<String, u64>| match counts.get_mut(stream) {
            Some(n) => *n += 1,
            None => {
                counts.insert(stream.to_string(), 1);
            }
        };
        add(&mut self.packets);
        let Some(latency) = read_stamp(payload) else {
            return false;
        };
        if !self.stamped.contains_key(stream) {
            self.first_stamped_at
                .insert(stream.to_string(), Instant::now());
        }
        add(&mut self.stamped);
        if self.latencies_us.len() < 2_000_000 {
            self.latencies_us.push(latency.as_micros() as u32);
        }
        true
    }
}

/// The clock stamps are relative to: one per process, shared by publishers and receivers.
fn stamp_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

const STAMP_MAGIC: &[u8; 4] = b"BSTS";

/// Writes the send time into the last 12 bytes of a payload.
fn stamp(payload: &mut [u8]) {
    let micros = stamp_epoch().elapsed().as_micros() as u64;
    let n = payload.len();
    payload[n - 12..n - 8].copy_from_slice(STAMP_MAGIC);
    payload[n - 8..].copy_from_slice(&micros.to_be_bytes());
}

fn read_stamp(payload: &[u8]) -> Option<Duration> {
    let n = payload.len();
    if n < 12 || &payload[n - 12..n - 8] != STAMP_MAGIC {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&payload[n - 8..]);
    let sent = Duration::from_micros(u64::from_be_bytes(b));
    Some(stamp_epoch().elapsed().saturating_sub(sent))
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
                    if !r.count(&stream, &packet.payload) {
                        let head = packet.payload.iter().take(16).copied().collect();
                        r.last_payload.insert(stream.clone(), head);
                        let recent = r.recent_payloads.entry(stream.clone()).or_default();
                        if recent.len() == 64 {
                            recent.pop_front();
                        }
                        recent.push_back(packet.payload.to_vec());
                    }
                }
            }
        });
    }
}

/// Options for a test peer.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Declare the video as a screen share (`share {mid}` before the offer).
    pub video_is_screen: bool,
    pub publish_audio: bool,
    /// Synthetic VP8 video for the load generator.
    pub publish_video: Option<VideoLoad>,
    /// SRTP profiles the peer offers; None = the stack's defaults.
    pub srtp_profiles: Option<Vec<SrtpProtectionProfile>>,
    /// The address the peer's media socket binds: loopback, or an address of a network
    /// namespace the test made (the pod-running cluster's node address).
    pub bind_ip: std::net::IpAddr,
}

/// Fixed-size VP8 packets at a constant bitrate, one frame per packet, each stamped.
#[derive(Debug, Clone, Copy)]
pub struct VideoLoad {
    pub bitrate_bps: u64,
    pub packet_bytes: usize,
}

impl VideoLoad {
    /// The payload of a browser's full-size video packet: Chrome's RTP packets are at most
    /// 1,200 bytes with their headers and extensions.
    pub const BROWSER_PACKET_PAYLOAD: usize = 1_150;
    /// Every this many packets is a keyframe (two seconds at 1.5 Mbit/s).
    const KEYFRAME_EVERY: u64 = 300;

    /// Time between two packets at this rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(
            (self.packet_bytes as u64 * 8 * 1_000_000_000) / self.bitrate_bps.max(1),
        )
    }

    /// The payload of packet `n` of the load: a VP8 descriptor, a key or delta frame tag, and
    /// the send-time stamp.
    pub fn payload(&self, n: u64) -> Vec<u8> {
        let mut payload = vec![0u8; self.packet_bytes];
        // VP8 payload descriptor: start of partition 0.
        payload[0] = 0x10;
        if n.is_multiple_of(Self::KEYFRAME_EVERY) {
            // Frame tag (key, shown), start code, 320x180.
            payload[1..11]
                .copy_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00]);
        } else {
            payload[1..4].copy_from_slice(&[0x11, 0x02, 0x00]);
        }
        stamp(&mut payload);
        payload
    }
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            publish_audio: true,
            publish_video: None,
            srtp_profiles: None,
            video_is_screen: false,
            bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }
}

impl PeerOptions {
    /// A subscriber: publishes nothing.
    pub fn receive_only() -> Self {
        Self {
            publish_audio: false,
            ..Self::default()
        }
    }

    pub fn video(load: VideoLoad) -> Self {
        Self {
            publish_audio: false,
            publish_video: Some(load),
            ..Self::default()
        }
    }

    /// Video declared to the node as a screen share.
    pub fn screen(load: VideoLoad) -> Self {
        Self {
            video_is_screen: true,
            ..Self::video(load)
        }
    }
}

/// The `webrtc`-crate half of a test peer, whatever signaling sets it up (the node's, or a
/// peer SFU's in the side-by-side benchmark): its connection, its tracks and what it received.
pub struct PeerMedia {
    pub pc: Arc<dyn PeerConnection>,
    pub received: Arc<Mutex<Received>>,
    /// Stamped video frames handed to the stack.
    pub video_sent: Arc<std::sync::atomic::AtomicU64>,
    audio: Option<(Arc<TrackLocalStaticRTP>, u32)>,
    video: Option<(Arc<TrackLocalStaticRTP>, VideoLoad, u32)>,
    gathered: mpsc::Receiver<()>,
}

/// A participant on the `webrtc` crate, joined through the node's signaling.
pub struct RustPeer {
    pub participant_id: String,
    pub received: Arc<Mutex<Received>>,
    /// Every signaling message after `joined`, in order.
    pub messages: Arc<Mutex<Vec<Value>>>,
    media: PeerMedia,
    /// Stamped video frames handed to the stack.
    pub video_sent: Arc<std::sync::atomic::AtomicU64>,
    outgoing: mpsc::Sender<Value>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PeerMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerMedia").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RustPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustPeer")
            .field("participant_id", &self.participant_id)
            .finish_non_exhaustive()
    }
}

const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;

impl PeerMedia {
    /// A connection with the tracks `options` asks for (a data channel when it publishes
    /// nothing), their media stream named `stream`. It gathers only `options.bind_ip`, never
    /// the machine's interfaces.
    pub async fn new(stream: &str, options: &PeerOptions) -> PeerMedia {
        let mut media = MediaEngine::default();
        media.register_default_codecs().expect("codecs");
        let registry =
            register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
        // No mDNS: its multicast socket fails with ENODEV in a namespace without a
        // multicast route (the pod-running cluster's), and loopback peers never need it.
        let mut settings = SettingEngineBuilder::new()
            .with_include_loopback_candidate(true)
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled);
        if let Some(profiles) = options.srtp_profiles.clone() {
            settings = settings.with_srtp_protection_profiles(profiles);
        }
        let received = Arc::new(Mutex::new(Received::default()));
        let (gathered_tx, gathered) = mpsc::channel(1);
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
            // Loopback (or a test namespace's address) only: never the machine's interfaces.
            .with_udp_addrs(vec![
                std::net::SocketAddr::new(options.bind_ip, 0).to_string(),
            ])
            .build()
            .await
            .expect("peer connection");
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let audio_ssrc = rand_u32();
        let audio = if options.publish_audio {
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                stream.to_string(),
                format!("audio-{stream}"),
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
            None
        };
        let video_ssrc = rand_u32();
        let video = if let Some(load) = options.publish_video {
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                stream.to_string(),
                format!("video-{stream}"),
                "video".to_string(),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(video_ssrc),
                        ..Default::default()
                    },
                    codec: RTCRtpCodec {
                        mime_type: "video/VP8".into(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: String::new(),
                        rtcp_feedback: vec![],
                    },
                    ..Default::default()
                }],
            )));
            pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .expect("add the video track");
            Some((track, load))
        } else {
            None
        };
        if audio.is_none() && video.is_none() {
            pc.create_data_channel("bedside", None)
                .await
                .expect("data channel");
        }

        PeerMedia {
            pc,
            received,
            video_sent: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            audio: audio.map(|track| (track, audio_ssrc)),
            video: video.map(|(track, load)| (track, load, video_ssrc)),
            gathered,
        }
    }

    /// An offer, candidates included (ICE gathers for at most 5 s).
    pub async fn offer(&mut self) -> String {
        let offer = self.pc.create_offer(None).await.expect("offer");
        self.settle_local(offer).await
    }

    /// The answer to a remote offer, candidates included.
    pub async fn answer(&mut self, offer: String) -> String {
        let offer = RTCSessionDescription::offer(offer).expect("offer sdp");
        self.pc
            .set_remote_description(offer)
            .await
            .expect("remote offer");
        let answer = self.pc.create_answer(None).await.expect("answer");
        self.settle_local(answer).await
    }

    pub async fn accept_answer(&self, answer: String) {
        let answer = RTCSessionDescription::answer(answer).expect("answer sdp");
        self.pc
            .set_remote_description(answer)
            .await
            .expect("remote answer");
    }

    /// Sets this peer's own description and returns it once its candidates are gathered.
    async fn settle_local(&mut self, description: RTCSessionDescription) -> String {
        self.pc
            .set_local_description(description)
            .await
            .expect("local description");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.gathered.recv()).await;
        self.pc
            .local_description()
            .await
            .expect("local description")
            .sdp
    }

    /// Synthetic Opus packets every 20 ms whose payload names `tag`, until the task is aborted.
    pub fn publish_audio(&self, tag: String) -> Option<tokio::task::JoinHandle<()>> {
        let (track, ssrc) = self.audio.clone()?;
        Some(tokio::spawn(async move {
            let mut seq: u16 = rand_u32() as u16;
            let mut ts: u32 = rand_u32();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let mut payload = vec![0u8; 80];
                let id = format!("from:{tag};");
                payload[..id.len()].copy_from_slice(id.as_bytes());
                let packet = rtp_packet(OPUS_PT, seq, ts, false, ssrc, payload);
                // Errors before the connection is up are expected; keep the clock going.
                let _ = track.write_rtp(packet).await;
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(960);
            }
        }))
    }

    /// Synthetic VP8 at the configured rate: one stamped frame per packet, a keyframe every
    /// 300 packets (two seconds at 1.5 Mbit/s), until the task is aborted.
    pub fn publish_video(&self) -> Option<tokio::task::JoinHandle<()>> {
        let (track, load, ssrc) = self.video.clone()?;
        let sent = self.video_sent.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(load.interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seq: u16 = rand_u32() as u16;
            let ts_base: u32 = rand_u32();
            let mut ts = ts_base;
            let started = Instant::now();
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let payload = load.payload(n);
                let packet = rtp_packet(VP8_PT, seq, ts, true, ssrc, payload);
                if track.write_rtp(packet).await.is_ok() {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                seq = seq.wrapping_add(1);
                // 90 kHz clock, advanced by real time so frame times stay plausible.
                ts = ts_base.wrapping_add((started.elapsed().as_micros() as u64 * 9 / 100) as u32);
                n += 1;
            }
        }))
    }
}

impl RustPeer {
    pub async fn join(node: &TestNode, room: &str, token: &str, options: PeerOptions) -> RustPeer {
        Self::try_join(node, room, token, options)
            .await
            .unwrap_or_else(|refusal| panic!("join refused: {refusal}"))
    }

    /// A join that may be refused or find no node: `Err` carries what the node said, or why
    /// there was no answer.
    pub async fn try_join(
        node: &TestNode,
        room: &str,
        token: &str,
        options: PeerOptions,
    ) -> Result<RustPeer, Value> {
        let mut signal = Signal::try_connect(node)
            .await
            .map_err(|e| json!({"connect": e}))?;
        let passcode = join::passcode(&signal.passcode_key, room);
        signal
            .send(
                json!({"v": 1, "type": "join", "room": room, "token": token, "passcode": passcode}),
            )
            .await;
        let joined = tokio::time::timeout(Duration::from_secs(15), signal.recv_any())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| json!({"closed": "no reply to join"}));
        if joined["type"] != "joined" {
            return Err(joined);
        }
        let participant_id = joined["participantId"]
            .as_str()
            .expect("participant id")
            .to_string();

        let mut media = PeerMedia::new(&format!("stream-{participant_id}"), &options).await;
        let local = media.offer().await;
        if options.video_is_screen {
            // The video m-line's mid, from the offer.
            let video = local.split("m=video").nth(1).unwrap_or_default();
            let mid = video
                .lines()
                .find_map(|l| l.strip_prefix("a=mid:"))
                .expect("the video m-line has a mid")
                .trim()
                .to_string();
            signal
                .send(json!({"v": 1, "type": "share", "mid": mid}))
                .await;
        }
        signal
            .send(json!({"v": 1, "type": "offer", "sdp": local}))
            .await;

        let messages = Arc::new(Mutex::new(Vec::new()));
        let (outgoing, mut outgoing_rx) = mpsc::channel::<Value>(64);
        let pc_task = media.pc.clone();
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

        Ok(RustPeer {
            participant_id,
            received: media.received.clone(),
            messages,
            video_sent: media.video_sent.clone(),
            media,
            outgoing,
            tasks: vec![signaling],
        })
    }

    /// Sends synthetic Opus packets every 20 ms whose payload names this participant.
    pub fn start_publishing(&mut self) {
        let tag = self.participant_id.clone();
        self.tasks.extend(self.media.publish_audio(tag));
    }

    /// Sends synthetic VP8 at the configured rate: one stamped frame per packet, a keyframe
    /// every two seconds.
    pub fn start_video(&mut self) {
        self.tasks.extend(self.media.publish_video());
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

    /// The last payloads (up to 64) received from a publisher, whole.
    pub fn recent_payloads_from(&self, participant: &str) -> Vec<Vec<u8>> {
        self.received
            .lock()
            .expect("lock")
            .recent_payloads
            .get(participant)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
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

    /// Whether its signaling connection is still open (a relay that died closes it).
    pub fn signaling_open(&self) -> bool {
        self.tasks.first().is_some_and(|t| !t.is_finished())
    }

    /// Leaves the meeting: sends `leave`, closes signaling and media.
    pub async fn leave(self) {
        let _ = self.outgoing.send(json!({"v": 1, "type": "leave"})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = self.outgoing.send(Value::Null).await;
        let _ = self.media.pc.close().await;
        for task in self.tasks {
            task.abort();
        }
    }
}

fn rtp_packet(
    pt: u8,
    seq: u16,
    ts: u32,
    marker: bool,
    ssrc: u32,
    payload: Vec<u8>,
) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            marker,
            ssrc,
            ..Default::default()
        },
        payload: bytes::Bytes::from(payload),
    }
}

pub(crate) fn rand_u32() -> u32 {
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

/// Like [`wait_until`], for a check that must await (a call to a server), every 250 ms.
pub async fn wait_until_async<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}
