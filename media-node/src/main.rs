//! `bedside-media-node`: the encrypted SFU clinicians and patients join from a browser.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bedside_crds::join::{self, JoinClaims, Role};
use bedside_media_node::config;
use bedside_media_node::node::{self, NodeSetup};
use clap::{Parser, Subcommand};

/// How long clients get to hear "shutting down" and close, after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "bedside-media-node",
    version,
    about = "Encrypted WebRTC SFU for video visits"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node. Without --config: the embedded dev default on 127.0.0.1 (self-signed
    /// certificate, a dev join link printed at start-up).
    Run {
        #[arg(long, value_name = "FILE", env = "BEDSIDE_CONFIG")]
        config: Option<PathBuf>,
        /// The `node` label on metrics.
        #[arg(long, env = "POD_NAME", default_value = "local")]
        node_name: String,
        /// In Kubernetes (with --pod-ip): share rooms with the tenant's other pods through
        /// Leases in this namespace, so each room's participants meet on one pod.
        #[arg(long, env = "POD_NAMESPACE", requires = "pod_ip")]
        namespace: Option<String>,
        /// This pod's IP, where the other pods reach its signaling.
        #[arg(long, env = "POD_IP", requires = "namespace")]
        pod_ip: Option<std::net::IpAddr>,
    },
    /// Check media-node config files the way the node does at start-up: exits 1, naming every
    /// offending field, when a file unlocks a BAA-locked setting or breaks a bound.
    CheckConfig {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        None => run(None, "local".into(), None),
        Some(Command::Run {
            config,
            node_name,
            namespace,
            pod_ip,
        }) => {
            let placement = namespace
                .zip(pod_ip)
                .map(|(namespace, pod_ip)| node::PlacementSetup { namespace, pod_ip });
            run(config, node_name, placement)
        }
        Some(Command::CheckConfig { files }) => check_config(files),
    }
}

fn check_config(files: Vec<PathBuf>) -> ExitCode {
    let mut ok = true;
    for file in files {
        match config::load(&file) {
            Ok(config) => println!(
                "{}: valid config for tenant {}",
                file.display(),
                config.tenant.name
            ),
            Err(e) => {
                ok = false;
                println!("{e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Crates that see content: at trace, the WebSocket crates print whole signaling frames (the
/// names participants type) and str0m and its SCTP stack print data-channel payloads (chat).
const CONTENT_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "axum::extract::ws",
    "str0m",
    "sctp_proto",
    "dimpl",
];

/// The log: JSON lines on stderr, filtered by RUST_LOG (default info), and never a trace event
/// from a crate that sees content, whatever RUST_LOG says.
fn init_logging() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,str0m=warn,dimpl=warn".into());
    let no_content = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() != tracing::Level::TRACE
            || !CONTENT_CRATES.iter().any(|c| meta.target().starts_with(c))
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_filter(env)
                .with_filter(no_content),
        )
        .init();
}

fn run(
    config_file: Option<PathBuf>,
    node_name: String,
    placement: Option<node::PlacementSetup>,
) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bedside-media-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let dev = config_file.is_none();
        let setup = match config_file {
            Some(path) => config::load(&path)
                .map_err(bedside_media_node::NodeError::from)
                .and_then(|c| NodeSetup::from_config(c, node_name)),
            None => NodeSetup::generated(config::dev_default(), node_name),
        };
        let setup = match setup {
            Ok(setup) => NodeSetup { placement, ..setup },
            Err(e) => {
                eprintln!("bedside-media-node: {e}");
                return ExitCode::FAILURE;
            }
        };
        let dev_link = dev.then(|| dev_links(&setup));
        let drain_grace = bedside_crds::policy::drain_grace(setup.config.meetings.max_duration.into());
        let running = match node::start(setup).await {
            Ok(running) => running,
            Err(e) => {
                eprintln!("bedside-media-node: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(link) = dev_link {
            match link {
                Ok((host, patient, passcode)) => {
                    let base = format!("https://{}", running.signaling);
                    let link = |token: &str| join::link(&base, DEV_ROOM, token, Some(&passcode));
                    println!(
                        "\nbedside media node (dev default) is up. Accept its self-signed certificate once.\n\n\
                         Clinician (host) link:\n\n  {}\n\n\
                         Patient link (waits until the clinician admits them):\n\n  {}\n\n\
                         Meeting passcode: {passcode}. The links are valid for 12 hours. Stop with Ctrl-C.\n",
                        link(&host),
                        link(&patient),
                    )
                }
                Err(e) => eprintln!("bedside-media-node: cannot make a dev token: {e}"),
            }
        }
        match wait_for_signal().await {
            // Kubernetes stopping the pod (rollout, scale-down, node drain): calls in progress
            // run to their end, up to the drain grace the pod's termination period allows.
            Stop::Terminate => running.drain(drain_grace, SHUTDOWN_GRACE).await,
            Stop::Interrupt => running.shutdown(SHUTDOWN_GRACE).await,
        }
        ExitCode::SUCCESS
    })
}

/// The dev default's links: one for the clinician (host), one for a patient, each with the
/// meeting's passcode in the fragment (a real patient gets it apart from the link).
fn dev_links(setup: &NodeSetup) -> Result<(String, String, String), join::TokenError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let token = |sub: &str, role: Role| {
        join::issue(
            &JoinClaims {
                sub: sub.into(),
                aud: setup.config.tenant.name.clone(),
                room: DEV_ROOM.into(),
                role,
                exp: now + 12 * 3600,
                nbf: None,
                start: None,
                generation: None,
                break_glass: None,
            },
            &setup.join_key,
        )
    };
    Ok((
        token("dev-clinician", Role::Host)?,
        token("dev-patient", Role::Participant)?,
        bedside_crds::join::passcode(&setup.join_key, DEV_ROOM),
    ))
}

const DEV_ROOM: &str = "dev-visit";

/// How the node was asked to stop.
enum Stop {
    /// SIGTERM: drain.
    Terminate,
    /// Ctrl-C: tell clients and stop now.
    Interrupt,
}

async fn wait_for_signal() -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return Stop::Interrupt;
    };
    tokio::select! {
        _ = term.recv() => {
            tracing::info!("SIGTERM: draining");
            Stop::Terminate
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupt: stopping");
            Stop::Interrupt
        }
    }
}
