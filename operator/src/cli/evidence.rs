//! `bedside-operator evidence`: an export of a tenant's compliance evidence for auditors, and
//! its offline check.
//!
//! `export` reads, with the user's own RBAC, the tenant, its compliance Report, its media
//! StatefulSet's revisions (the config hash each ran), its BreakGlass objects and, given the
//! tenant's audit records as its SIEM holds them, verifies those under the tenant's audit key;
//! it writes `evidence.json`, `report.html`, and a manifest signed with Ed25519. `verify` needs
//! no cluster: it checks the signature and names each part altered since.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bedside_audit::chain::AuditKey;
use bedside_crds::HealthcareTenant;
use bedside_crds::break_glass::BreakGlass;
use bedside_operator::build::config::AUDIT_HMAC_KEY;
use bedside_operator::export::seal::{
    self, EVIDENCE_FILE, MANIFEST_FILE, PAGE_FILE, SIGNATURE_FILE, SealError,
};
use bedside_operator::export::{self, Inputs};
use bedside_operator::names::{ChildNames, selector_labels};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make an Ed25519 signing key for exports (PKCS#8, readable by you only) and its public
    /// key (`<file>.pub`, hex) to give auditors.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a tenant's evidence for a time range into a folder, signed.
    Export(ExportArgs),
    /// Check an export offline: its signature, and every part against it.
    Verify {
        /// The export's folder.
        folder: PathBuf,
        /// The signer's public key (a `.pub` file from `evidence keygen`, or its hex); without
        /// it the key in the manifest is used, and its fingerprint shown to compare.
        #[arg(long)]
        public_key: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
struct ExportArgs {
    #[arg(long)]
    tenant: String,
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Start of the range: RFC 3339 or a date (2026-10-01, from its start, UTC).
    #[arg(long)]
    from: String,
    /// End of the range (default: now).
    #[arg(long)]
    to: Option<String>,
    /// The tenant's audit records as JSON lines (from its SIEM): verified and summed up.
    #[arg(long)]
    records: Option<PathBuf>,
    /// The signing key (`evidence keygen`); without it a one-off key signs, and its
    /// fingerprint is printed to give the auditor on another channel.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// The folder to write (created; must be empty).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}: give an RFC 3339 time (2026-10-01T00:00:00Z) or a date (2026-10-01)")]
    Time(String),
    #[error("--from {from} is after --to {to}")]
    Range { from: Timestamp, to: Timestamp },
    #[error("no Kubernetes config ({0}): set KUBECONFIG")]
    NoCluster(kube::Error),
    #[error("cannot read {what}: {source} (does it exist, and may you read it?)")]
    Read { what: String, source: kube::Error },
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} exists and is not empty: give a new folder")]
    NotEmpty(String),
    #[error("Secret {0} has no {AUDIT_HMAC_KEY}: the records cannot be verified without it")]
    NoAuditKey(String),
    #[error("the tenant's audit key is not usable: {0}")]
    AuditKey(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("cannot render the export: {0}")]
    Render(serde_json::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::File {
        path: path.display().to_string(),
        source,
    }
}

pub fn run(args: &Args) -> ExitCode {
    let result = match &args.command {
        Command::Keygen { out } => keygen(out),
        Command::Verify { folder, public_key } => verify(folder, public_key.as_deref()),
        Command::Export(export_args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::Runtime)
            .and_then(|rt| rt.block_on(export(export_args))),
    };
    super::finish(result)
}

fn keygen(out: &Path) -> Result<String, CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = seal::generate_key()?;
    let public = seal::public_key(&key)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut f| f.write_all(&key))
        .map_err(file_error(out))?;
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    std::fs::write(&public_path, format!("{public}\n")).map_err(file_error(&public_path))?;
    Ok(format!(
        "signing key {} (keep it), public key {} (give it to auditors), fingerprint {}",
        out.display(),
        public_path.display(),
        seal::fingerprint(&public)
    ))
}

fn read_files(folder: &Path) -> Result<BTreeMap<String, Vec<u8>>, CliError> {
    let mut files = BTreeMap::new();
    for name in [EVIDENCE_FILE, PAGE_FILE] {
        let path = folder.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                files.insert(name.to_string(), bytes);
            }
            // Named by the verifier as missing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(&path)(e)),
        }
    }
    Ok(files)
}

fn verify(folder: &Path, public_key: Option<&str>) -> Result<String, CliError> {
    let expected = match public_key {
        Some(text) if Path::new(text).exists() => Some(
            std::fs::read_to_string(text)
                .map_err(file_error(Path::new(text)))?
                .trim()
                .to_string(),
        ),
        Some(hex) => Some(hex.trim().to_string()),
        None => None,
    };
    let files = read_files(folder)?;
    let read = |name: &str| {
        let path = folder.join(name);
        std::fs::read(&path).map_err(file_error(&path))
    };
    let manifest = seal::verify(
        &files,
        &read(MANIFEST_FILE)?,
        &read(SIGNATURE_FILE)?,
        expected.as_deref(),
    )?;
    let whose = match expected {
        Some(_) => "the key you gave".to_string(),
        None => format!(
            "the key in its manifest, fingerprint {}: compare it with the one the exporter gave you",
            seal::fingerprint(&manifest.public_key)
        ),
    };
    Ok(format!(
        "{}: verified: {} files and {} parts as signed by {whose}",
        folder.display(),
        manifest.files.len(),
        manifest.parts.len()
    ))
}

/// RFC 3339, or a date meaning its start in UTC.
fn parse_time(text: &str) -> Result<Timestamp, CliError> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| CliError::Time(text.to_string()))
}

async fn export(args: &ExportArgs) -> Result<String, CliError> {
    let from = parse_time(&args.from)?;
    let to = args
        .to
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or_else(Timestamp::now);
    if from > to {
        return Err(CliError::Range { from, to });
    }
    if std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(CliError::NotEmpty(args.out.display().to_string()));
    }
    let signing_key = match &args.signing_key {
        Some(path) => std::fs::read(path).map_err(file_error(path))?,
        None => seal::generate_key()?,
    };
    let client = kube::Client::try_default()
        .await
        .map_err(CliError::NoCluster)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let read = |what: String| move |source| CliError::Read { what, source };
    let tenant = Api::<HealthcareTenant>::namespaced(client.clone(), &namespace)
        .get(&args.tenant)
        .await
        .map_err(read(format!(
            "HealthcareTenant {namespace}/{}",
            args.tenant
        )))?;
    let report_results = report_results(&client, &namespace, &args.tenant).await?;
    let selector = selector_labels(&tenant)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let revisions = Api::<ControllerRevision>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(read(format!("the ControllerRevisions in {namespace}")))?
        .items;
    let break_glass = match Api::<BreakGlass>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        // No BreakGlass API served: none was ever granted here.
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => return Err(read(format!("the BreakGlass objects in {namespace}"))(e)),
    };
    let records = match &args.records {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(file_error(path))?;
            let key = audit_key(&client, &namespace, &tenant).await?;
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().to_string());
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            Some((
                format!("{name} (SHA-256 {hex})"),
                text.lines().map(str::to_string).collect::<Vec<_>>(),
                key,
            ))
        }
        None => None,
    };
    let evidence = export::build(&Inputs {
        tenant: &tenant,
        report_results: &report_results,
        revisions: &revisions,
        break_glass: &break_glass,
        records: records
            .as_ref()
            .map(|(name, lines, key)| (name.as_str(), lines.as_slice(), key)),
        range: (from, to),
        now: Timestamp::now(),
    });
    write_export(&args.out, &evidence, &signing_key)?;
    let public = seal::public_key(&signing_key)?;
    Ok(format!(
        "wrote {} ({} controls, {} config revisions, {} BreakGlass, {} audit chains), signed by key {}{}",
        args.out.display(),
        evidence.controls.len(),
        evidence.config_history.len(),
        evidence.break_glass.len(),
        evidence.audit_chains.chains.len(),
        seal::fingerprint(&public),
        if args.signing_key.is_none() {
            " (a one-off key: give the auditor this fingerprint on another channel)"
        } else {
            ""
        }
    ))
}

fn write_export(out: &Path, evidence: &export::Evidence, key: &[u8]) -> Result<(), CliError> {
    let mut json = serde_json::to_vec_pretty(evidence).map_err(CliError::Render)?;
    json.push(b'\n');
    let files = BTreeMap::from([
        (EVIDENCE_FILE.to_string(), json),
        (
            PAGE_FILE.to_string(),
            export::html::render(evidence).into_bytes(),
        ),
    ]);
    let (manifest, signature) = seal::sign(&files, key)?;
    std::fs::create_dir_all(out).map_err(file_error(out))?;
    let all = files.into_iter().chain([
        (MANIFEST_FILE.to_string(), manifest),
        (SIGNATURE_FILE.to_string(), signature),
    ]);
    for (name, bytes) in all {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(file_error(&path))?;
    }
    Ok(())
}

/// The results of the tenant's compliance Report, where openreports.io is served.
async fn report_results(
    client: &kube::Client,
    namespace: &str,
    tenant: &str,
) -> Result<Vec<serde_json::Value>, CliError> {
    let resource = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report"),
        "reports",
    );
    let reports: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    match reports.get_opt(&format!("{tenant}-hipaa")).await {
        Ok(report) => Ok(report
            .and_then(|r| r.data.get("results")?.as_array().cloned())
            .unwrap_or_default()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Vec::new()),
        Err(source) => Err(CliError::Read {
            what: format!("the compliance Report {namespace}/{tenant}-hipaa"),
            source,
        }),
    }
}

async fn audit_key(
    client: &kube::Client,
    namespace: &str,
    tenant: &HealthcareTenant,
) -> Result<AuditKey, CliError> {
    let secret = ChildNames::of(tenant).keys;
    let bytes = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&secret)
        .await
        .map_err(|source| CliError::Read {
            what: format!("Secret {namespace}/{secret} (the tenant's audit key)"),
            source,
        })?
        .data
        .and_then(|mut d| d.remove(AUDIT_HMAC_KEY))
        .ok_or_else(|| CliError::NoAuditKey(secret.clone()))?
        .0;
    AuditKey::new(&bytes).map_err(|e| CliError::AuditKey(e.to_string()))
}
