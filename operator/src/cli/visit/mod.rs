//! `bedside-operator visit create`: book a visit and print its links, for clinic staff and
//! scripts. The tenant's join key comes through the user's kubeconfig (their RBAC on the
//! tenant's `<tenant>-keys` Secret decides who may) or from a key file.
//! `bedside-operator visit cancel` ([`cancel`]): refuse a visit's links on every pod and end
//! its call. `bedside-operator visit reissue`: new links for a visit, the older ones refused.

mod cancel;

use std::path::PathBuf;
use std::process::ExitCode;

use bedside_crds::leases::VisitChange;
use bedside_crds::visit::{self, Invitee, InviteeRole, IssuedVisit, VisitPolicy, VisitRequest};
use bedside_crds::{HealthcareTenant, policy};
use bedside_operator::build::config::JOIN_TOKEN_KEY;
use bedside_operator::names::ChildNames;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Book a visit: one link per person, the passcode apart, the window the links work in.
    Create(Box<CreateArgs>),
    /// Cancel a visit: its links are refused on every media pod, and its call ends.
    Cancel(cancel::CancelArgs),
    /// New links for a booked visit (same id and passcode); the older ones are refused on
    /// every media pod. Give the visit's id and the same details as when it was booked.
    Reissue(Box<ReissueArgs>),
}

#[derive(clap::Args, Debug)]
struct ReissueArgs {
    /// The visit's id, as `visit create` printed it.
    #[arg(long)]
    id: String,
    #[command(flatten)]
    booking: CreateArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// For people: the window, the passcode, a link per person.
    Text,
    /// Everything, for scripts and scheduling systems.
    Json,
    /// FHIR Appointments (R5 virtualService and the R4 extension) for the EHR.
    Fhir,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// The HealthcareTenant whose key signs the links.
    #[arg(long)]
    tenant: String,
    /// The tenant's namespace (default: the kubeconfig context's).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Read the join key from this file instead of the tenant's Secret (needs --url).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The web client's address, e.g. https://meet.mercy.example (default: the tenant's
    /// status.endpoint).
    #[arg(long)]
    url: Option<String>,
    /// When the visit starts: an RFC 3339 time (2026-12-03T15:00:00Z) or `now`.
    #[arg(long, default_value = "now")]
    start: String,
    /// How long it lasts, e.g. 30m or 1h15m (at most the tenant's maxDuration).
    #[arg(long, value_parser = bedside_crds::duration::parse, default_value = "30m")]
    duration: kube::core::Duration,
    /// The hosting practitioner: Practitioner/<id> or PractitionerRole/<id>.
    #[arg(long)]
    host: String,
    /// A patient: Patient/<id>. Repeat for each.
    #[arg(long, value_name = "REFERENCE")]
    patient: Vec<String>,
    /// An interpreter: Practitioner/<id>, PractitionerRole/<id> or RelatedPerson/<id>.
    #[arg(long, value_name = "REFERENCE")]
    interpreter: Vec<String>,
    /// A caregiver: RelatedPerson/<id> or Patient/<id>.
    #[arg(long, value_name = "REFERENCE")]
    caregiver: Vec<String>,
    /// Someone who sees and hears but never sends.
    #[arg(long, value_name = "REFERENCE")]
    observer: Vec<String>,
    /// How long before the start the links open (at most 1h).
    #[arg(long, value_parser = bedside_crds::duration::parse, default_value = "15m")]
    opens_before: kube::core::Duration,
    /// How long after the end the links keep working (at most 1h).
    #[arg(long, value_parser = bedside_crds::duration::parse, default_value = "15m")]
    grace: kube::core::Duration,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("--start: {0}: give an RFC 3339 time such as 2026-12-03T15:00:00Z, or now")]
    Start(jiff::Error),
    #[error("--key-file needs --url: without the cluster there is no tenant endpoint to read")]
    UrlNeeded,
    #[error("cannot read the key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("no Kubernetes config ({0}): set KUBECONFIG, or use --key-file and --url")]
    NoCluster(kube::Error),
    #[error(
        "cannot read HealthcareTenant {namespace}/{tenant}: {source} (does it exist, and may you get it?)"
    )]
    Tenant {
        namespace: String,
        tenant: String,
        source: kube::Error,
    },
    #[error(
        "cannot read the join key from Secret {namespace}/{secret}: {detail} (booking visits needs `get` on that Secret)"
    )]
    Key {
        namespace: String,
        secret: String,
        detail: String,
    },
    #[error(
        "tenant {0} has no endpoint in its status yet (is it Ready?); give the web client's address with --url"
    )]
    NoEndpoint(String),
    #[error("{0}")]
    Visit(#[from] visit::VisitError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot render the output: {0}")]
    Render(serde_json::Error),
    #[error("{0}")]
    Cancel(String),
}

pub fn run(args: &Args) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|rt| {
            rt.block_on(async {
                match &args.command {
                    Command::Create(create) => run_create(create).await,
                    Command::Cancel(cancel) => cancel::run(cancel).await,
                    Command::Reissue(reissue) => run_reissue(reissue).await,
                }
            })
        });
    super::finish(result)
}

async fn run_create(args: &CreateArgs) -> Result<String, CliError> {
    let now = Timestamp::now();
    let request = request(args, now)?;
    let (policy, key) = match &args.key_file {
        Some(path) => offline(args, path)?,
        None => from_cluster(args).await?,
    };
    let id = visit::new_visit_id()?;
    let visit = visit::book(&request, &policy, &key, &id, now)?;
    render(&visit, &policy.tenant, args.output)
}

/// Checks the details, makes the next issue of the links current in the visit's lease (so the
/// older ones are refused everywhere), and signs that issue.
async fn run_reissue(args: &ReissueArgs) -> Result<String, CliError> {
    let now = Timestamp::now();
    let booking = &args.booking;
    if !visit::is_visit_id(&args.id) {
        return Err(CliError::Cancel(
            "--id: a visit id as `visit create` printed it (visit-...)".into(),
        ));
    }
    let request = request(booking, now)?;
    let (client, namespace) = cluster(&booking.namespace).await?;
    let (policy, key) = match &booking.key_file {
        Some(path) => offline(booking, path)?,
        None => from_cluster(booking).await?,
    };
    // Checked before anything is written: bad details leave the current links working.
    let trial = visit::issue(&request, &policy, &key, (&args.id, 1), now)?;
    let api = Api::<Lease>::namespaced(client, &namespace);
    let record = bedside_crds::leases::write_visit_change(
        &api,
        VisitChange::Reissue,
        (&booking.tenant, &args.id),
        trial.window.closes,
    )
    .await
    .map_err(|e| cancel::write_failed(&namespace, e))?
    .unwrap_or_default();
    let visit = visit::issue(&request, &policy, &key, (&args.id, record.generation), now)?;
    render(&visit, &policy.tenant, booking.output)
}

fn request(args: &CreateArgs, now: Timestamp) -> Result<VisitRequest, CliError> {
    let start = match args.start.as_str() {
        "now" => now,
        text => text.parse().map_err(CliError::Start)?,
    };
    let roles = [
        (&args.patient, InviteeRole::Patient),
        (&args.interpreter, InviteeRole::Interpreter),
        (&args.caregiver, InviteeRole::Caregiver),
        (&args.observer, InviteeRole::Observer),
    ];
    let invitees = roles
        .into_iter()
        .flat_map(|(references, role)| {
            references.iter().map(move |reference| Invitee {
                reference: reference.clone(),
                role,
            })
        })
        .collect();
    Ok(VisitRequest {
        start,
        duration: args.duration.into(),
        host: args.host.clone(),
        invitees,
    })
}

fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::KeyFile {
        path: path.display().to_string(),
        source,
    })
}

/// Key file and URL given: the tenant's limits are the defaults a tenant gets.
fn offline(args: &CreateArgs, path: &std::path::Path) -> Result<(VisitPolicy, Vec<u8>), CliError> {
    let base_url = args.url.clone().ok_or(CliError::UrlNeeded)?;
    let key = read_key_file(path)?;
    let policy = VisitPolicy {
        tenant: args.tenant.clone(),
        base_url,
        max_duration: policy::DEFAULT_MEETING_DURATION,
        max_participants: policy::DEFAULT_MAX_PARTICIPANTS,
        opens_before: args.opens_before.into(),
        grace: args.grace.into(),
    };
    Ok((policy, key))
}

/// The user's kubeconfig: its client and the namespace to use.
async fn cluster(namespace: &Option<String>) -> Result<(kube::Client, String), CliError> {
    let client = kube::Client::try_default()
        .await
        .map_err(CliError::NoCluster)?;
    let namespace = namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    Ok((client, namespace))
}

/// The tenant and its join key, read with the user's own rights.
async fn tenant_and_key(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(HealthcareTenant, Vec<u8>), CliError> {
    let (tenant, mut keys) = tenant_and_keys(client, namespace, name).await?;
    Ok((tenant, keys.swap_remove(0)))
}

/// The tenant and its join keys, the current first, then (during a rotation) the previous.
async fn tenant_and_keys(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(HealthcareTenant, Vec<Vec<u8>>), CliError> {
    let tenant = Api::<HealthcareTenant>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|source| CliError::Tenant {
            namespace: namespace.to_string(),
            tenant: name.to_string(),
            source,
        })?;
    let secret = ChildNames::of(&tenant).keys;
    let key_error = |detail: String| CliError::Key {
        namespace: namespace.to_string(),
        secret: secret.clone(),
        detail,
    };
    let mut data = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&secret)
        .await
        .map_err(|e| key_error(e.to_string()))?
        .data
        .unwrap_or_default();
    let current = data
        .remove(JOIN_TOKEN_KEY)
        .ok_or_else(|| key_error(format!("it has no {JOIN_TOKEN_KEY}")))?
        .0;
    let previous = data
        .remove(crate::cli::keys::PREVIOUS_JOIN_TOKEN_KEY)
        .map(|k| k.0);
    Ok((tenant, std::iter::once(current).chain(previous).collect()))
}

/// The tenant's limits and endpoint, and its key, through the user's kubeconfig.
async fn from_cluster(args: &CreateArgs) -> Result<(VisitPolicy, Vec<u8>), CliError> {
    let (client, namespace) = cluster(&args.namespace).await?;
    let (tenant, key) = tenant_and_key(&client, &namespace, &args.tenant).await?;
    let base_url = match &args.url {
        Some(url) => url.clone(),
        None => tenant
            .status
            .as_ref()
            .and_then(|s| s.endpoint.as_deref())
            .map(bedside_crds::join::web_client_url)
            .ok_or_else(|| CliError::NoEndpoint(args.tenant.clone()))?,
    };
    let meetings = &tenant.spec.meetings;
    let policy = VisitPolicy {
        tenant: args.tenant.clone(),
        base_url,
        max_duration: meetings.max_duration.into(),
        max_participants: meetings.max_participants,
        opens_before: args.opens_before.into(),
        grace: args.grace.into(),
    };
    Ok((policy, key))
}

/// The web client is served where signaling is: `wss://host:port` -> `https://host:port`.
fn render(visit: &IssuedVisit, tenant: &str, output: Output) -> Result<String, CliError> {
    match output {
        Output::Json => serde_json::to_string_pretty(visit).map_err(CliError::Render),
        Output::Fhir => serde_json::to_string_pretty(&visit::fhir::appointments(visit))
            .map_err(CliError::Render),
        Output::Text => Ok(text(visit, tenant)),
    }
}

fn text(visit: &IssuedVisit, tenant: &str) -> String {
    let time = |t: Timestamp| bedside_crds::join::utc(u64::try_from(t.as_second()).unwrap_or(0));
    let minutes = visit.minutes();
    let (a, b) = visit.passcode.split_at(visit.passcode.len() / 2);
    let mut out = format!(
        "Visit {} ({tenant})\n  starts    {}, {minutes} min\n  links     work from {} to {}\n  passcode  {a} {b}  (send it apart from the links: a text message, the letter)\n\n",
        visit.id,
        time(visit.start),
        time(visit.window.opens),
        time(visit.window.closes),
    );
    if visit.generation > 0 {
        out.push_str(&format!(
            "  reissued  these links are issue {}; the visit's older links are refused\n\n",
            visit.generation
        ));
    }
    for person in std::iter::once(&visit.host).chain(&visit.invitees) {
        out.push_str(&format!(
            "  {:<12} {}\n    {}\n",
            person.role, person.reference, person.link
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn create(duration: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([
            "visit",
            "create",
            "--tenant",
            "mercy",
            "--host",
            "Practitioner/1",
            "--patient",
            "Patient/2",
            "--duration",
            duration,
        ])
    }

    #[test]
    fn a_duration_too_long_or_with_a_negative_part_is_refused_with_a_message_not_a_panic() {
        assert!(create("1h15m").is_ok());
        for (bad, says) in [
            ("99999999999999999999h", "longer than 100 years"),
            ("1h-5m", "negative part"),
            ("soon", "not a duration"),
        ] {
            let refused = create(bad).err().expect(bad).to_string();
            assert!(refused.contains(says), "{bad}: {refused}");
        }
    }
}
