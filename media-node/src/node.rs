//! Wiring: config and key material in, a running node out (signaling, media loop, metrics).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bedside_crds::node_config::MediaNodeConfig;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::watch;

use crate::crypto_policy::SrtpPolicy;
use crate::error::NodeError;
use crate::evidence::EvidenceSource;
use crate::limits::ClientGuards;
use crate::placement::leases::{self, Placement};
use crate::sfu::{self, Command, EngineSettings, EngineStats, SfuHandle};
use crate::signaling::server::router;
use crate::signaling::state::AppState;
use crate::tls::{self, ServedCertificate, TlsFiles, TlsMaterial};
use crate::{address, health};
use bedside_audit::delivery::{
    self, AuditHealthReport, AuditMetrics, Auditor, BufferState, ChainLock, NetworkSink,
};
use bedside_crds::node_config::AuditSinkSettings;

/// How often the audit chain gets a checkpoint while it grows.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// Everything a node needs, resolved: the config plus the material its files point at.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    pub config: MediaNodeConfig,
    pub tls: TlsMaterial,
    /// Where `tls` was read from: read again while the node runs, so a renewal is served.
    pub tls_files: Option<TlsFiles>,
    /// The current join-token key.
    pub join_key: Vec<u8>,
    /// During a rotation, the key before it: its links keep working.
    pub previous_join_key: Option<Vec<u8>>,
    /// Where the join keys were read from: read again while the node runs.
    pub join_key_files: Option<crate::keys::KeyFiles>,
    pub audit_key: Vec<u8>,
    /// Where audit records go: stdout (the stdout sink) unless a file is given (tests).
    pub audit_file: Option<std::path::PathBuf>,
    /// A CA to trust for webhook sinks instead of the public roots (a private SIEM, tests).
    pub webhook_ca: Option<Vec<u8>>,
    /// How often the audit chain gets a checkpoint ([`CHECKPOINT_INTERVAL`]; shorter in tests).
    pub checkpoint_interval: Duration,
    /// Names this node in metrics (`node` label): the pod name in Kubernetes.
    pub node_name: String,
    /// In Kubernetes: where this pod's room placement lives; `None` holds every room here.
    pub placement: Option<PlacementSetup>,
}

/// What a pod needs to share rooms with the other pods of its tenant.
#[derive(Clone, Debug)]
pub struct PlacementSetup {
    /// The pod's namespace, where the placement Leases live.
    pub namespace: String,
    /// The pod's IP, at which the other pods reach its signaling.
    pub pod_ip: std::net::IpAddr,
}

pub(crate) fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|source| NodeError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

impl NodeSetup {
    /// Reads the TLS and key files a rendered config names.
    pub fn from_config(config: MediaNodeConfig, node_name: String) -> Result<Self, NodeError> {
        let tls_files = TlsFiles {
            cert: config.tls.cert_file.clone(),
            key: config.tls.key_file.clone(),
        };
        let tls = tls_files.read()?;
        let join_key_files = crate::keys::KeyFiles::beside(config.keys.join_token_key_file.clone());
        let (join_key, previous_join_key) = join_key_files.read()?;
        let audit_key = read("the audit HMAC key", &config.keys.audit_hmac_key_file)?;
        Ok(Self {
            config,
            tls,
            tls_files: Some(tls_files),
            join_key,
            previous_join_key,
            join_key_files: Some(join_key_files),
            audit_key,
            audit_file: None,
            webhook_ca: None,
            checkpoint_interval: CHECKPOINT_INTERVAL,
            node_name,
            placement: None,
        })
    }

    /// A config with its certificate and join key made in memory (dev default and tests).
    pub fn generated(config: MediaNodeConfig, node_name: String) -> Result<Self, NodeError> {
        let mut join_key = vec![0u8; 32];
        let mut audit_key = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut join_key)
            .and_then(|()| aws_lc_rs::rand::fill(&mut audit_key))
            .map_err(|_| NodeError::Tls("no randomness for the node's keys".into()))?;
        Ok(Self {
            config,
            tls: TlsMaterial::self_signed()?,
            tls_files: None,
            join_key,
            previous_join_key: None,
            join_key_files: None,
            audit_key,
            audit_file: None,
            webhook_ca: None,
            checkpoint_interval: CHECKPOINT_INTERVAL,
            node_name,
            placement: None,
        })
    }
}

/// A node that is up; dropping it does not stop it, [`RunningNode::shutdown`] does.
#[derive(Debug)]
pub struct RunningNode {
    pub signaling: SocketAddr,
    pub media: SocketAddr,
    pub metrics: SocketAddr,
    shutdown: watch::Sender<bool>,
    sfu: SfuHandle,
    https: axum_server::Handle<SocketAddr>,
    https_task: tokio::task::JoinHandle<()>,
    engine_task: tokio::task::JoinHandle<()>,
    metrics_task: tokio::task::JoinHandle<()>,
    audit: Arc<Auditor>,
    stats: Arc<EngineStats>,
    placement: Option<(Arc<Placement>, tokio::task::JoinHandle<()>)>,
    /// The client limits, and the task that seals counted refusals.
    guards: (Arc<ClientGuards>, tokio::task::JoinHandle<()>),
    /// This process is the chain's one writer until it ends.
    _chain_lock: ChainLock,
}

pub async fn start(setup: NodeSetup) -> Result<RunningNode, NodeError> {
    let config = &setup.config;
    let certificate = ServedCertificate::new(setup.tls.clone(), setup.tls_files.clone())?;
    let tls_config = tls::server_config(certificate.clone())?;
    let registry = Registry::new();
    let audit_metrics = AuditMetrics::new(&registry, &config.tenant.name, &setup.node_name)?;
    // Before the chain is read: a predecessor still stopping would fork it.
    let chain_lock = ChainLock::acquire(&config.audit.buffer_dir, predecessor_patience(config))
        .await
        .map_err(|e| NodeError::Audit(e.to_string()))?;
    let audit = start_audit(&setup, &audit_metrics)?;
    let keys = crate::keys::JoinKeys::new(
        &config.tenant.name,
        setup.join_key.clone(),
        setup.previous_join_key.clone(),
        setup.join_key_files.clone(),
        Some(audit.clone()),
    )?;
    let health = AuditHealth {
        audit: audit.clone(),
        metrics: audit_metrics.clone(),
        policy: config.audit.when_buffer_full,
    };
    // process_cpu_seconds_total, process_resident_memory_bytes, open fds: node saturation.
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let stats = Arc::new(EngineStats::new(
        &registry,
        &config.tenant.name,
        &setup.node_name,
    )?);

    let settings = engine_settings(config);
    let end_to_end = settings.end_to_end;
    // The evidence reports the policy the engine enforces, not another copy of it.
    let evidence = EvidenceSource::new(config, settings.policy, registry.clone(), audit.clone());
    let (guards, sealing) = start_client_guards(config, &audit);
    let (sfu, media, engine_task) =
        start_media(config, settings, &stats, guards.media_tcp.clone()).await?;

    let running_stats = stats.clone();
    let media_address = follow_media_address(&setup, media, &sfu);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let tls_metrics = tls::TlsMetrics::new(&registry, &config.tenant.name, &setup.node_name)?;
    tokio::spawn(tls::keep_fresh(
        certificate.clone(),
        tls_metrics,
        shutdown_rx.clone(),
    ));
    tokio::spawn(crate::keys::keep_fresh(keys.clone(), shutdown_rx.clone()));
    let relay = match &config.network.relay {
        Some(settings) => {
            let relay = Arc::new(crate::relay::Relay::load(settings)?);
            tokio::spawn(crate::relay::keep_fresh(relay.clone(), shutdown_rx.clone()));
            Some(relay)
        }
        None => None,
    };
    let probes = Probes {
        heartbeat: stats.heartbeat.clone(),
        engine: engine_task.abort_handle(),
        media_address: media_address.clone(),
        draining: shutdown_rx.clone(),
        audit: audit.clone(),
    };
    let placement = match &setup.placement {
        Some(on) => {
            Some(start_placement(&setup, on, &sfu, &shutdown_rx, &media_address, &audit).await?)
        }
        None => None,
    };
    let state = AppState {
        sfu: sfu.clone(),
        keys: keys.clone(),
        shutdown: shutdown_rx,
        media_address,
        display_name: config.tenant.display_name.clone(),
        stats: stats.clone(),
        tenant: config.tenant.name.clone(),
        audit: audit.clone(),
        passcodes: Arc::new(crate::meeting::passcode::Passcodes::new()),
        end_to_end,
        placement: placement.as_ref().map(|(p, _)| p.clone()),
        peer_tls: crate::signaling::forward::peer_tls(certificate)?,
        guards: guards.clone(),
        relay,
    };
    let placed = placement.as_ref().map(|(p, _)| p.clone());
    let app = with_visits_api(
        router(state),
        &setup,
        &audit,
        placed,
        &sfu,
        &registry,
        &keys,
    )?;
    let (signaling, https, https_task) = serve_signaling(
        config.network.signaling_listen,
        tls_config,
        app,
        crate::signaling::accept::SocketGate::new(guards.sockets.clone(), stats.clone()),
    )?;
    let (metrics, metrics_task) = serve_metrics(
        config.network.metrics_listen,
        registry,
        (health, evidence),
        probes,
    )
    .await?;

    tracing::info!(%signaling, %media, %metrics, node = %setup.node_name, tenant = %config.tenant.name, "media node up");
    Ok(RunningNode {
        signaling,
        media,
        metrics,
        shutdown,
        sfu,
        https,
        https_task,
        engine_task,
        metrics_task,
        audit,
        stats: running_stats,
        placement,
        guards: (guards, sealing),
        _chain_lock: chain_lock,
    })
}

/// The client limits, and the task that seals the refusals they counted.
fn start_client_guards(
    config: &MediaNodeConfig,
    audit: &Arc<Auditor>,
) -> (Arc<ClientGuards>, tokio::task::JoinHandle<()>) {
    let guards = Arc::new(ClientGuards::new(&config.network.client_limits));
    let sealing = tokio::spawn(crate::signaling::refusals::seal_counted(
        guards.clone(),
        audit.clone(),
    ));
    (guards, sealing)
}

async fn start_media(
    config: &MediaNodeConfig,
    settings: sfu::EngineSettings,
    stats: &Arc<EngineStats>,
    tcp_gate: Arc<crate::limits::Connections>,
) -> Result<(SfuHandle, SocketAddr, tokio::task::JoinHandle<()>), NodeError> {
    let loops = sfu::shard::loop_count(config.network.media_loops.map(usize::from));
    tracing::info!(loops, "media loops, rooms spread over them");
    sfu::start(
        config.network.media_listen,
        settings,
        stats.clone(),
        tcp_gate,
        loops,
    )
    .await
    .map_err(|source| NodeError::Listen {
        what: "media (UDP, and TCP on the same port for ICE-TCP)",
        addr: config.network.media_listen,
        source,
    })
}

/// The visits API for scheduling systems, on the signaling port, when the config turns it on.
fn with_visits_api(
    app: axum::Router,
    setup: &NodeSetup,
    audit: &Arc<Auditor>,
    placement: Option<Arc<Placement>>,
    sfu: &SfuHandle,
    registry: &Registry,
    keys: &Arc<crate::keys::JoinKeys>,
) -> Result<axum::Router, NodeError> {
    let config = &setup.config;
    let Some(api) = &config.api else {
        return Ok(app);
    };
    let api_setup = crate::api::ApiSetup {
        tenant: config.tenant.name.clone(),
        keys: keys.clone(),
        max_duration: config.meetings.max_duration.into(),
        max_participants: config.meetings.max_participants,
        credentials_dir: api.credentials_dir.clone(),
        requests_per_second: api.requests_per_second,
        audit: audit.clone(),
        placement,
        sfu: sfu.clone(),
    };
    Ok(app.merge(crate::api::router(api_setup, registry)?))
}

/// The longest a predecessor with this node's buffers can still be running: its drain, plus
/// the margin the operator adds to the pod's termination grace.
fn predecessor_patience(config: &MediaNodeConfig) -> Duration {
    bedside_crds::policy::drain_grace(config.meetings.max_duration.into()) + Duration::from_secs(60)
}

/// What the media loop needs from the config. Before the pod has an address, media sockets
/// bind and the loop runs, but joins are refused and the node is not Ready.
fn engine_settings(config: &MediaNodeConfig) -> EngineSettings {
    let placeholder = config
        .network
        .advertised_media_address
        .unwrap_or(config.network.media_listen);
    EngineSettings {
        tenant: config.tenant.name.clone(),
        advertised: placeholder,
        policy: SrtpPolicy::Aes256GcmOnly,
        max_participants: config.meetings.max_participants as usize,
        meeting: crate::meeting::Policy::new(
            config.meetings.idle_timeout.into(),
            config.meetings.max_duration.into(),
        ),
        end_to_end: config.meetings.media_encryption
            == bedside_crds::node_config::MediaEncryptionMode::EndToEnd,
        relay: config.network.relay.is_some(),
    }
}

/// On a cluster: the lease cache that places rooms, and the task that beats this pod's lease.
async fn start_placement(
    setup: &NodeSetup,
    on: &PlacementSetup,
    sfu: &SfuHandle,
    shutdown: &watch::Receiver<bool>,
    media_address: &watch::Receiver<Option<SocketAddr>>,
    audit: &Arc<Auditor>,
) -> Result<(Arc<Placement>, tokio::task::JoinHandle<()>), NodeError> {
    let config = &setup.config;
    let url = format!(
        "wss://{}/ws",
        SocketAddr::new(on.pod_ip, config.network.signaling_listen.port())
    );
    let placement = Arc::new(
        Placement::connect(&on.namespace, &config.tenant.name, &setup.node_name, url).await?,
    );
    let beat = leases::spawn(
        placement.clone(),
        sfu.clone(),
        shutdown.clone(),
        media_address.clone(),
        audit.clone(),
    );
    Ok((placement, beat))
}

/// The web client and `/ws` over TLS: its address, a handle to stop it, its task.
fn serve_signaling(
    listen: SocketAddr,
    tls_config: Arc<rustls::ServerConfig>,
    app: Router,
    gate: crate::signaling::accept::SocketGate,
) -> Result<
    (
        SocketAddr,
        axum_server::Handle<SocketAddr>,
        tokio::task::JoinHandle<()>,
    ),
    NodeError,
> {
    let listener = std::net::TcpListener::bind(listen).map_err(|source| NodeError::Listen {
        what: "signaling (HTTPS)",
        addr: listen,
        source,
    })?;
    let signaling = listener.local_addr().map_err(|source| NodeError::Listen {
        what: "signaling (HTTPS)",
        addr: listen,
        source,
    })?;
    let https = axum_server::Handle::new();
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(tls_config);
    // The gate counts each socket before its TLS handshake; TLS runs on what it lets in.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls).acceptor(gate);
    let server = axum_server::from_tcp(listener)
        .map_err(|source| NodeError::Listen {
            what: "signaling (HTTPS)",
            addr: signaling,
            source,
        })?
        .acceptor(acceptor)
        .handle(https.clone());
    let https_task = tokio::spawn(async move {
        if let Err(e) = server
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
        {
            tracing::error!(error = %e, "signaling server stopped");
        }
    });
    Ok((signaling, https, https_task))
}

/// `/metrics`, the probes and `/audit/health` over plain HTTP: its address and its task.
async fn serve_metrics(
    listen: SocketAddr,
    registry: Registry,
    (health, evidence): (AuditHealth, EvidenceSource),
    probes: Probes,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), NodeError> {
    let metrics_listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| NodeError::Listen {
            what: "metrics (HTTP)",
            addr: listen,
            source,
        })?;
    let metrics = metrics_listener
        .local_addr()
        .map_err(|source| NodeError::Listen {
            what: "metrics (HTTP)",
            addr: listen,
            source,
        })?;
    let metrics_health = health.clone();
    let metrics_app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                metrics_health.refresh();
                async move { render_metrics(&registry) }
            }),
        )
        .merge(probes.router())
        // What the operator reads for the tenant's compliance report (and its sinks).
        .route(
            "/evidence",
            get({
                let health = health.clone();
                move || evidence_answer(health.clone(), evidence.clone())
            }),
        )
        // What the operator reads for the tenant's AuditSinksReady condition.
        .route(
            "/audit/health",
            get(move || {
                let body = serde_json::to_string(&health.report()).unwrap_or_default();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        );
    let metrics_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, metrics_app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok((metrics, metrics_task))
}

/// The address browsers send media to, as a watch: fixed by the config, or followed from the
/// pod's file in the operator's addresses ConfigMap; every change also reaches the media loop.
fn follow_media_address(
    setup: &NodeSetup,
    media: SocketAddr,
    sfu: &SfuHandle,
) -> watch::Receiver<Option<SocketAddr>> {
    let network = &setup.config.network;
    let fixed = network.advertised_media_address.map(|mut address| {
        if address.port() == 0 {
            // Listening on an ephemeral port (tests, dev): advertise the port actually bound.
            address.set_port(media.port());
        }
        address
    });
    let (published, receiver) = watch::channel(fixed);
    if let (None, Some(dir)) = (fixed, &network.advertised_media_address_dir) {
        let (found, mut changes) = watch::channel(None);
        tokio::spawn(address::follow(
            address::file_of(dir, &setup.node_name),
            found,
        ));
        let sfu = sfu.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let current = *changes.borrow_and_update();
                if let Some(address) = current {
                    // The media loop first, then signaling and readiness: a join let in by the
                    // new address queues behind this command, so it never gets the old one.
                    sfu.tell(Command::Advertise { address }).await;
                    published.send_replace(Some(address));
                }
            }
        });
    }
    receiver
}

/// What the kubelet's probes read, on the metrics port: `/healthz` (liveness) and `/readyz`.
#[derive(Clone, Debug)]
struct Probes {
    heartbeat: Arc<health::Heartbeat>,
    engine: tokio::task::AbortHandle,
    media_address: watch::Receiver<Option<SocketAddr>>,
    draining: watch::Receiver<bool>,
    audit: Arc<Auditor>,
}

impl Probes {
    fn facts(&self) -> health::Facts {
        health::Facts {
            loop_age: self.heartbeat.age(std::time::Instant::now()),
            loop_ended: self.engine.is_finished(),
            media_address: *self.media_address.borrow(),
            draining: *self.draining.borrow(),
            audit_refusing_joins: self.audit.refuses_joins(),
        }
    }

    fn router(self) -> Router {
        let liveness = self.clone();
        Router::new()
            .route(
                "/healthz",
                get(move || {
                    let verdict = health::live(&liveness.facts()).map(|()| "ok");
                    async move { probe_answer(verdict) }
                }),
            )
            .route(
                "/readyz",
                get(move || {
                    let verdict = health::ready(&self.facts())
                        .map(|()| "ready")
                        .map_err(|reasons| format!("not ready: {}", reasons.join("; ")));
                    async move { probe_answer(verdict) }
                }),
            )
    }
}

/// `/evidence` as JSON: the check at rest reads the disk, off the runtime's threads.
async fn evidence_answer(
    health: AuditHealth,
    evidence: EvidenceSource,
) -> (
    axum::http::StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
    match tokio::task::spawn_blocking(move || evidence.evidence(health.report())).await {
        Ok(found) => (
            axum::http::StatusCode::OK,
            json,
            serde_json::to_string(&found).unwrap_or_default(),
        ),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            json,
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

/// 200 with "ok"/"ready", or 503 with why: what the kubelet records in the pod's events.
fn probe_answer(verdict: Result<&'static str, String>) -> (axum::http::StatusCode, String) {
    match verdict {
        Ok(word) => (axum::http::StatusCode::OK, format!("{word}\n")),
        Err(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{why}\n"),
        ),
    }
}

/// The node's audit health, for `/audit/health` and the buffer gauge.
#[derive(Clone, Debug)]
struct AuditHealth {
    audit: Arc<Auditor>,
    metrics: AuditMetrics,
    policy: delivery::BufferFullPolicy,
}

impl AuditHealth {
    fn refresh(&self) -> BufferState {
        // One read of the buffers serves the report, the gauge and the verdict.
        let depths = self.audit.depths();
        self.metrics.set_depths(&depths);
        let state = self
            .audit
            .state_at(depths.iter().copied().max().unwrap_or(0));
        self.metrics
            .set_buffer_full(state != BufferState::Ok, state == BufferState::FullRefusing);
        state
    }

    fn report(&self) -> AuditHealthReport {
        let state = self.refresh();
        AuditHealthReport {
            sinks: self.metrics.report(),
            buffer_full: state != BufferState::Ok,
            refusing_joins: state == BufferState::FullRefusing,
            when_buffer_full: self.policy,
        }
    }
}

/// The auditor, and a delivery task per network sink.
fn start_audit(setup: &NodeSetup, metrics: &AuditMetrics) -> Result<Arc<Auditor>, NodeError> {
    let config = &setup.config;
    let wants_stdout = config
        .audit
        .sinks
        .iter()
        .any(|s| matches!(s, AuditSinkSettings::Stdout));
    let out: Option<Box<dyn std::io::Write + Send>> = match &setup.audit_file {
        Some(path) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| NodeError::ReadFile {
                    what: "the audit file",
                    path: path.clone(),
                    source,
                })?,
        )),
        None if wants_stdout => Some(Box::new(std::io::stdout())),
        None => None,
    };
    let mut sinks = Vec::new();
    for (index, sink) in config.audit.sinks.iter().enumerate() {
        match sink {
            AuditSinkSettings::Stdout => {}
            AuditSinkSettings::Syslog { address, ca_file } => sinks.push((
                index,
                NetworkSink::Syslog {
                    address: address.clone(),
                    ca_pem: read("the syslog sink's CA", ca_file)?,
                },
            )),
            AuditSinkSettings::Webhook { url, token_file } => {
                let token = String::from_utf8(read("the webhook sink's token", token_file)?)
                    .map_err(|_| {
                        NodeError::Audit(format!("{}: the token is not text", token_file.display()))
                    })?
                    .trim()
                    .to_string();
                sinks.push((
                    index,
                    NetworkSink::Webhook {
                        url: url.clone(),
                        token,
                        ca_pem: setup.webhook_ca.clone(),
                    },
                ));
            }
        }
    }
    let plan = delivery::Plan {
        key: &setup.audit_key,
        tenant: &config.tenant.name,
        node: &setup.node_name,
        app: "bedside-media-node",
        out,
        buffer_dir: &config.audit.buffer_dir,
        chain_tail: config.audit.buffer_dir.join("chain-tail.json"),
        sinks,
        buffer_bytes: config.audit.buffer_bytes,
        when_buffer_full: config.audit.when_buffer_full,
        checkpoint_interval: setup.checkpoint_interval,
    };
    delivery::start(plan, metrics).map_err(|e| NodeError::Audit(e.to_string()))
}

fn render_metrics(registry: &Registry) -> String {
    let mut out = Vec::new();
    if TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

impl RunningNode {
    /// Stops taking joins (`/readyz` fails, joins are refused with "reconnect"), lets the calls
    /// in progress (its own, and those whose signaling it carries to other pods) run until
    /// their last participant leaves or `grace` runs out, then shuts down as
    /// [`shutdown`](Self::shutdown) does within `close`.
    pub async fn drain(self, grace: Duration, close: Duration) {
        let _ = self.shutdown.send(true);
        let started = tokio::time::Instant::now();
        tracing::info!(
            participants = self.stats.participants.get(),
            grace_s = grace.as_secs(),
            "draining: no new visits; calls in progress go on"
        );
        // Its own calls, and the calls whose signaling it carries to other pods.
        let busy = |stats: &EngineStats| stats.participants.get() > 0 || stats.relayed.get() > 0;
        while busy(&self.stats) && started.elapsed() < grace {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.shutdown(close).await;
    }

    /// Stops taking joins, tells every client, and closes within `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        self.sfu
            .tell(Command::Shutdown {
                reason: "the media node is shutting down".into(),
            })
            .await;
        self.https.graceful_shutdown(Some(grace));
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), self.https_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.engine_task).await;
        // The chain's last record; the sinks get a moment to take what is buffered, and what
        // they do not take waits in the buffer for the next start.
        self.guards.1.abort();
        crate::signaling::refusals::seal_all(&self.guards.0, &self.audit);
        self.audit.close();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.audit.drained() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some((placement, beat)) = &self.placement {
            // Last: until now this pod said "draining", so its rooms stayed here.
            beat.abort();
            placement.leave().await;
        }
        self.metrics_task.abort();
        tracing::info!("media node stopped");
    }
}
