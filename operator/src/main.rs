//! `bedside-operator`: the Kubernetes operator for HealthcareTenant, and the offline tools a
//! platform team runs in its pipelines.

mod cli;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bedside-operator",
    version,
    about = "Operator for bedside HealthcareTenants"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator against the cluster in KUBECONFIG or the in-cluster config.
    Run(RunArgs),
    /// Print a CustomResourceDefinition as YAML: HealthcareTenant, or BreakGlass.
    Crd {
        #[arg(value_enum, default_value = "healthcare-tenant")]
        kind: CrdKind,
    },
    /// Print the operator's least-privilege roles as YAML: its cluster-wide ClusterRole, the
    /// ClusterRole it needs in each namespace that holds tenants (bind it there with a
    /// RoleBinding), and the Role for its leader-election Lease in its own namespace.
    Rbac {
        /// The operator's own namespace (for the leader-election Role).
        #[arg(long, default_value = "bedside-system")]
        namespace: String,
    },
    /// Check tenant YAML offline with exactly the CRD's rules (schema + CEL).
    ///
    /// Prints every violation with its field path; exits 1 on any violation or unreadable
    /// file, 0 when every HealthcareTenant is valid. Other kinds of objects are skipped.
    Validate(cli::validate::Args),
    /// Book visits: a link per person for a HealthcareTenant, the passcode apart.
    ///
    /// Reads the tenant's join key through your kubeconfig (your RBAC on its `<tenant>-keys`
    /// Secret decides whether you may) or from --key-file; prints text, JSON or FHIR.
    Visit(cli::visit::Args),
    /// Rotate a tenant's join-token key: new links are signed with a new key, links already
    /// sent keep working. Needs `get` and `patch` on the tenant's `<tenant>-keys` Secret.
    Keys(cli::keys::Args),
    /// Export a tenant's compliance evidence for auditors (JSON and a page, signed), and
    /// verify an export offline, naming any part altered.
    Evidence(cli::evidence::Args),
}

/// The CRDs `crd` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CrdKind {
    HealthcareTenant,
    BreakGlass,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080", env = "BEDSIDE_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "bedside-system")]
    lease_namespace: String,
    /// Run without leader election; only safe with a single replica.
    #[arg(long)]
    no_leader_election: bool,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Tenants reconciled at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Where the operator's own audit records wait for each tenant's sinks (mount a volume).
    #[arg(
        long,
        env = "BEDSIDE_AUDIT_DIR",
        default_value = "/var/lib/bedside-operator/audit"
    )]
    audit_dir: std::path::PathBuf,
}

fn run(args: RunArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        // stdout carries the audit records of tenants with a stdout sink.
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes config: set KUBECONFIG or run in a cluster");
                return ExitCode::FAILURE;
            }
        };
        let identity = args.identity.unwrap_or_else(|| {
            std::env::var("HOSTNAME").unwrap_or_else(|_| format!("bedside-operator-{}", std::process::id()))
        });
        let settings = bedside_operator::run::Settings {
            http_addr: Some(args.http_addr),
            lease_namespace: (!args.no_leader_election).then_some(args.lease_namespace),
            identity,
            concurrency: args.concurrency,
            audit_dir: args.audit_dir,
            resync: Default::default(),
        };
        let shutdown = async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        };
        match bedside_operator::run::run(client, settings, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "operator stopped");
                ExitCode::FAILURE
            }
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Rbac { namespace } => {
            use bedside_operator::rbac;
            let documents = [
                serde_yaml::to_string(&rbac::cluster_role()),
                serde_yaml::to_string(&rbac::tenant_role()),
                serde_yaml::to_string(&rbac::leader_role(&namespace)),
            ];
            match documents.into_iter().collect::<Result<Vec<_>, _>>() {
                Ok(yaml) => {
                    print!("{}", yaml.join("---\n"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Crd { kind } => {
            match kind {
                CrdKind::HealthcareTenant => print!("{}", bedside_crds::crd_yaml()),
                CrdKind::BreakGlass => print!("{}", bedside_crds::break_glass_crd_yaml()),
            }
            ExitCode::SUCCESS
        }
        Command::Validate(args) => cli::validate::run(&args),
        Command::Visit(args) => cli::visit::run(&args),
        Command::Keys(args) => cli::keys::run(&args),
        Command::Evidence(args) => cli::evidence::run(&args),
    }
}
