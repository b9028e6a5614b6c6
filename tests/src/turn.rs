//! coturn (Debian's package) as the tenant's TURN relay, configured by the operator's own
//! renderer (`bedside_operator::build::relay`), and a TURN client (webrtc-rs's sans-IO one)
//! that asks it for what a browser would, or an attacker.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bedside_crds::node_config::RelaySettings;
use bedside_operator::build::relay::{RelayServer, coturn_config};
use bytes::BytesMut;
use rtc::sansio::Protocol as _;
use rtc::shared::{TransportContext, TransportMessage, TransportProtocol};
use rtc::turn::client::{Client, ClientConfig, Event};

pub fn unavailable() -> Option<String> {
    if !Path::new("/usr/bin/turnserver").exists() {
        return Some(
            "coturn is missing (apt-get install coturn; scripts/test-deps.sh does it)".into(),
        );
    }
    None
}

/// A running turnserver; killed on drop.
#[derive(Debug)]
pub struct Coturn {
    child: Child,
    pub relay: RelayServer,
    log: std::path::PathBuf,
}

impl Coturn {
    /// Starts coturn on `relay.listen` with a certificate for that address made here, sharing
    /// `secret` with the media node. Must run inside the test's namespace (it binds 443).
    pub async fn start(dir: &Path, mut relay: RelayServer, secret: &str) -> Coturn {
        let listen = relay.listen.expect("a test relay listens on one address");
        let cert = rcgen::generate_simple_self_signed(vec![listen.to_string()]).expect("cert");
        relay.cert_file = dir.join("relay.crt");
        relay.key_file = dir.join("relay.key");
        std::fs::write(&relay.cert_file, cert.cert.pem()).expect("write cert");
        std::fs::write(&relay.key_file, cert.signing_key.serialize_pem()).expect("write key");
        let conf = dir.join("turnserver.conf");
        std::fs::write(&conf, coturn_config(&relay)).expect("write turnserver.conf");
        let log = dir.join("turnserver.log");
        let child = Command::new("/usr/bin/turnserver")
            .arg("-c")
            .arg(&conf)
            .arg(format!("--static-auth-secret={secret}"))
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        let coturn = Coturn { child, relay, log };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect((listen, coturn.relay.tls_port))
                .await
                .is_ok()
            {
                return coturn;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "coturn did not listen on {listen}:{}:\n{}",
            coturn.relay.tls_port,
            coturn.log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn udp_address(&self) -> SocketAddr {
        SocketAddr::new(self.relay.listen.expect("listen"), self.relay.port)
    }

    /// What coturn logged, for a failing assertion's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TURN client over UDP, driven step by step.
pub struct TurnClient {
    socket: UdpSocket,
    client: Client,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl TurnClient {
    pub fn new(server: SocketAddr, username: &str, password: &str) -> TurnClient {
        // On loopback, from the relay's own address (another host, as far as it can tell);
        // elsewhere (a relay pod), from wherever the route says.
        let local = if server.ip().is_loopback() {
            server.ip()
        } else {
            IpAddr::from([0, 0, 0, 0])
        };
        let socket = UdpSocket::bind((local, 0)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let config = ClientConfig {
            turn_serv_addr: server.to_string(),
            local_addr: socket.local_addr().expect("local addr"),
            transport_protocol: TransportProtocol::UDP,
            username: username.into(),
            password: password.into(),
            rto_in_ms: 100,
            ..Default::default()
        };
        let crypto = rtc::crypto::default_provider().expect("crypto provider");
        let client = Client::new(config, crypto).expect("TURN client");
        TurnClient { socket, client }
    }

    /// An allocation: the relayed address, or the server's refusal.
    pub fn allocate(&mut self) -> Result<SocketAddr, String> {
        self.client
            .allocate(Instant::now())
            .map_err(|e| e.to_string())?;
        match self.next_event() {
            Event::AllocateResponse(_, relayed) => Ok(relayed),
            Event::AllocateError(_, e) => Err(e.to_string()),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// Permission to relay to `peer` through `relayed`: granted, or the server's refusal.
    pub fn permit(&mut self, relayed: SocketAddr, peer: SocketAddr) -> Result<(), String> {
        let mut relay = self.client.relay(relayed).map_err(|e| e.to_string())?;
        relay
            .create_permission(Instant::now(), peer)
            .map_err(|e| e.to_string())?;
        match self.next_event() {
            Event::CreatePermissionResponse(..) => Ok(()),
            Event::CreatePermissionError(_, e) => Err(e.to_string()),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// Sends what the client queued and feeds it the server's answers until an event comes
    /// (the client times out its own transactions).
    fn next_event(&mut self) -> Event {
        let mut buf = vec![0u8; 2048];
        loop {
            while let Some(out) = self.client.poll_write() {
                let _ = self.socket.send_to(&out.message, out.transport.peer_addr);
            }
            if let Some(event) = self.client.poll_event() {
                return event;
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let message = TransportMessage {
                        now: Instant::now(),
                        transport: TransportContext {
                            local_addr: self.socket.local_addr().expect("local addr"),
                            peer_addr: from,
                            transport_protocol: TransportProtocol::UDP,
                            ecn: None,
                        },
                        message: BytesMut::from(&buf[..n]),
                    };
                    let _ = self.client.handle_read(message);
                }
                Err(_) => {
                    let _ = self.client.handle_timeout(Instant::now());
                }
            }
        }
    }
}

/// The loopback address the test relay listens on: not the node's, so that media the node
/// gets from it is told apart from the browsers' own.
pub fn relay_ip() -> IpAddr {
    IpAddr::from([127, 0, 0, 3])
}

pub fn require_or_skip() -> bool {
    crate::run_or_skip("TURN relay test", unavailable(), "BEDSIDE_REQUIRE_TOOLS")
}

/// A tenant's relay as the operator would run it, for a node on 127.0.0.1: coturn on
/// [`relay_ip`] (TLS on 443, UDP on 3478), and the node's settings that hand it out. Must run
/// inside the test's namespace.
pub async fn start_for_loopback_node(dir: &Path) -> (Coturn, RelaySettings) {
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).expect("random secret");
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let secret_file = dir.join("relay-secret");
    std::fs::write(&secret_file, &secret).expect("write the secret");
    let relay = RelayServer {
        realm: "test-clinic".into(),
        listen: Some(relay_ip()),
        tls_port: 443,
        port: 3478,
        relay_ports: 49152..=49407,
        cert_file: Default::default(),
        key_file: Default::default(),
        peers: vec![IpAddr::from([127, 0, 0, 1])],
        run_dir: dir.to_path_buf(),
    };
    let coturn = Coturn::start(dir, relay, &secret).await;
    let ip = relay_ip();
    let settings = RelaySettings {
        urls: vec![
            format!("turns:{ip}:443?transport=tcp"),
            format!("turn:{ip}:3478?transport=udp"),
        ],
        shared_secret_file: secret_file,
    };
    (coturn, settings)
}
