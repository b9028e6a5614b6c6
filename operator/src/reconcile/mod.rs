//! One reconcile of one tenant: fetch -> validate -> build -> diff -> apply -> status.

mod access;
mod addons;
mod children;
pub mod drift;
pub mod evidence;
mod media_set;
mod observe;
mod relay;
mod report;
pub mod sinks;
pub mod status;
pub mod watched;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bedside_crds::validation::{TenantValidator, ValidationSetupError};
use bedside_crds::{HealthcareTenant, HealthcareTenantStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::audit::{Happening, OperatorAudit};
use crate::baa::BaaState;
use crate::build::BuildError;
use crate::metrics::Metrics;
use crate::names::{FIELD_MANAGER, FINALIZER};
use children::AppliedRecord;
use drift::Drift;
use status::Observed;

/// How often a settled tenant is looked at again even without a watch event (a little sooner
/// for some, by uid, so that tenants provisioned together come back spread out). The watch
/// caches answer for its children, so a look costs the API server next to nothing.
pub const RESYNC: Duration = Duration::from_secs(600);
const RETRY: Duration = Duration::from_secs(15);
/// How often a tenant with media nodes is looked at again, to keep AuditSinksReady current.
pub const SINK_HEALTH_RESYNC: Duration = Duration::from_secs(30);
/// How long a deleted tenant is held for its last audit records to reach its sinks.
const DEPROVISION_AUDIT_GRACE: Duration = Duration::from_secs(600);

/// How often tenants are looked at again without a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resync {
    /// A settled tenant ([`RESYNC`]).
    pub settled: Duration,
    /// A tenant whose audit sinks someone reports on, to keep AuditSinksReady current
    /// ([`SINK_HEALTH_RESYNC`]).
    pub sink_health: Duration,
}

impl Default for Resync {
    fn default() -> Self {
        Self {
            settled: RESYNC,
            sink_health: SINK_HEALTH_RESYNC,
        }
    }
}

/// The steps of a reconcile, as the errors metric names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The stored status, the BAA's state, the spec against the CRD's own rules.
    Observe,
    /// The tenant's children: built, read, compared, applied.
    Children,
    /// cert-manager's Certificate and prometheus-operator's ServiceMonitor.
    AddOns,
    /// The tenant's TURN relay.
    Relay,
    /// The TLS Secret, Ready media pods, the audit sinks' reports.
    Health,
    /// The status written.
    Status,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Observe => "observe",
            Step::Children => "children",
            Step::AddOns => "add_ons",
            Step::Relay => "relay",
            Step::Health => "health",
            Step::Status => "status",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Step::Observe => "reading the tenant",
            Step::Children => "applying the tenant's objects",
            Step::AddOns => "applying the Certificate or ServiceMonitor",
            Step::Relay => "applying the TURN relay",
            Step::Health => "observing the media nodes and audit sinks",
            Step::Status => "writing the tenant's status",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A step of the reconcile failed: the metric says which, the message why.
    #[error("{} failed: {source}", step.describe())]
    Step { step: Step, source: Box<Error> },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("Kubernetes API call failed while {action}: {source}")]
    Kube { action: String, source: kube::Error },
    #[error("the operator cannot start: {0}")]
    Setup(String),
    #[error("{0}")]
    Finalizer(String),
    #[error(
        "Secret {name} is not this tenant's keys Secret, so the tenant is not provisioned: {why}"
    )]
    ForeignKeys { name: String, why: String },
    #[error(
        "the tenant's last audit records are not yet delivered to its sinks; the tenant is kept until they are, or for at most {} minutes after its deletion",
        DEPROVISION_AUDIT_GRACE.as_secs() / 60
    )]
    AuditPending,
    #[error("{hint} ({action} was forbidden)")]
    NotPermitted { action: String, hint: String },
}

impl Error {
    /// A short, fixed label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Step { step, .. } => step.label(),
            Error::Build(_) => "build",
            Error::Kube { .. } => "kube_api",
            Error::Setup(_) => "setup",
            Error::Finalizer(_) => "finalizer",
            Error::ForeignKeys { .. } => "foreign_keys",
            Error::AuditPending => "audit_pending",
            Error::NotPermitted { .. } => "not_permitted",
        }
    }

    /// RBAC refused the operator (403, "User ... cannot ..."): it may not write in the
    /// tenant's namespace. A quota or an admission policy also answers 403, with other words.
    fn forbidden_action(&self) -> Option<&str> {
        match self {
            Error::Step { source, .. } => source.forbidden_action(),
            Error::Kube {
                action,
                source: kube::Error::Api(status),
            } if status.code == 403
                && status.message.contains("User \"")
                && status.message.contains(" cannot ") =>
            {
                Some(action)
            }
            _ => None,
        }
    }
}

impl Error {
    /// Labels an error with the step it happened in (once: an inner step's label stays).
    fn at(step: Step) -> impl FnOnce(Error) -> Error {
        move |source| match source {
            Error::Step { .. } => source,
            source => Error::Step {
                step,
                source: Box::new(source),
            },
        }
    }
}

impl From<ValidationSetupError> for Error {
    fn from(e: ValidationSetupError) -> Self {
        Error::Setup(e.to_string())
    }
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub validator: TenantValidator,
    pub metrics: Metrics,
    /// `policy/v1` where the server has it, `policy/v1beta1` before 1.21.
    pub pdb_resource: ApiResource,
    /// Whether cert-manager's API is served (discovered at start-up).
    pub cert_manager: bool,
    /// prometheus-operator's ServiceMonitor, when its API is served.
    pub service_monitors: Option<ApiResource>,
    /// What the last apply of each tenant's children wrote, by tenant uid.
    pub applied: std::sync::Mutex<std::collections::HashMap<String, AppliedRecord>>,
    /// The operator's own records, to each tenant's sinks.
    pub audit: OperatorAudit,
    /// Where the operator runs (POD_NAMESPACE), for the media nodes' NetworkPolicy.
    pub operator_namespace: Option<String>,
    /// How often tenants are looked at again without a watch event.
    pub resync: Resync,
    /// Whether the API server takes a LoadBalancer Service with both UDP and TCP ports
    /// (Kubernetes 1.24 and later): assumed until it refuses one.
    pub mixed_protocol_load_balancers: std::sync::atomic::AtomicBool,
    /// The running controller's metadata caches of the children (none between leaderships:
    /// a cache nobody fills any more must not confirm anything).
    pub watched: std::sync::RwLock<Option<Arc<watched::Watched>>>,
    /// The resourceVersion of each tenant (by uid) whose status the operator last read or
    /// wrote: a tenant in hand at that version carries the current status.
    status_versions: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// openreports.io's Report, when its API is served: the tenants' compliance evidence.
    pub reports: Option<ApiResource>,
    /// What each tenant's Report (by uid) last said, and when it was written.
    reports_written: std::sync::Mutex<std::collections::HashMap<String, (String, Instant)>>,
    /// The end of each tenant's certificate (by uid), and when it was read.
    certificate_ends: std::sync::Mutex<std::collections::HashMap<String, CertificateEnd>>,
}

/// When a certificate's end date was read, and what was read (none: no Secret yet).
type CertificateEnd = (Instant, Option<Result<Timestamp, String>>);

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("pdb", &self.pdb_resource.api_version)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// `audit_dir` holds the buffers of the operator's own audit records (a volume).
    pub async fn new(
        client: Client,
        identity: &str,
        audit_dir: std::path::PathBuf,
    ) -> Result<Self, Error> {
        let pdb_resource = discover_pdb(&client).await?;
        let cert_manager = serves(&client, "cert-manager.io/v1", "certificates").await;
        let service_monitors = serves(&client, "monitoring.coreos.com/v1", "servicemonitors")
            .await
            .then(|| {
                ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                    "monitoring.coreos.com",
                    "v1",
                    "ServiceMonitor",
                ))
            });
        let reports = serves(&client, "openreports.io/v1alpha1", "reports")
            .await
            .then(|| {
                ApiResource::from_gvk_with_plural(
                    &kube::core::GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report"),
                    "reports",
                )
            });
        tracing::info!(pdb = %pdb_resource.api_version, cert_manager, service_monitors = service_monitors.is_some(), compliance_reports = reports.is_some(), "discovered the cluster's APIs");
        Ok(Self {
            reports,
            reports_written: Default::default(),
            certificate_ends: Default::default(),
            applied: Default::default(),
            watched: Default::default(),
            status_versions: Default::default(),
            audit: OperatorAudit::new(audit_dir, identity),
            operator_namespace: std::env::var("POD_NAMESPACE").ok(),
            mixed_protocol_load_balancers: std::sync::atomic::AtomicBool::new(true),
            resync: Resync::default(),
            cert_manager,
            service_monitors,
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: FIELD_MANAGER.into(),
                    instance: Some(identity.into()),
                },
            ),
            client,
            validator: TenantValidator::new()?,
            metrics: Metrics::new(),
            pdb_resource,
        })
    }
}

impl Context {
    pub fn with_resync(mut self, resync: Resync) -> Self {
        self.resync = resync;
        self
    }

    /// The children's resourceVersions as the controller's watches last saw them; None while
    /// no controller runs.
    fn cached_versions(
        &self,
        namespace: &str,
        names: &crate::names::ChildNames,
        desired: &crate::build::Desired,
    ) -> Option<Vec<Option<String>>> {
        let watched = self.watched.read().ok()?.clone()?;
        Some(watched.versions(namespace, names, desired))
    }

    /// The tenant's status when `tenant` is at the version the operator last read or wrote
    /// it at, so no GET is needed.
    fn status_in_hand(&self, tenant: &HealthcareTenant) -> Option<HealthcareTenantStatus> {
        let uid = tenant.uid()?;
        let version = tenant.resource_version()?;
        let known = self.status_versions.lock().ok()?.get(&uid)? == &version;
        known.then(|| tenant.status.clone().unwrap_or_default())
    }

    fn status_seen_at(&self, tenant: &HealthcareTenant, version: Option<String>) {
        if let (Some(uid), Some(version), Ok(mut versions)) =
            (tenant.uid(), version, self.status_versions.lock())
        {
            versions.insert(uid, version);
        }
    }
}

/// A duration in `0..max_secs` seconds that is the same for a tenant (by uid) every time.
fn spread(uid: &str, max_secs: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut hasher);
    hasher.finish() % max_secs.max(1)
}

async fn serves(client: &Client, group_version: &str, plural: &str) -> bool {
    client
        .list_api_group_resources(group_version)
        .await
        .is_ok_and(|list| list.resources.iter().any(|r| r.name == plural))
}

async fn discover_pdb(client: &Client) -> Result<ApiResource, Error> {
    for version in ["policy/v1", "policy/v1beta1"] {
        if let Ok(list) = client.list_api_group_resources(version).await
            && list
                .resources
                .iter()
                .any(|r| r.name == "poddisruptionbudgets")
        {
            let (group, ver) = version.split_once('/').unwrap_or(("policy", "v1"));
            return Ok(ApiResource {
                group: group.into(),
                version: ver.into(),
                api_version: version.into(),
                kind: "PodDisruptionBudget".into(),
                plural: "poddisruptionbudgets".into(),
            });
        }
    }
    Err(Error::Setup(
        "the API server serves no PodDisruptionBudget (policy/v1 or policy/v1beta1)".into(),
    ))
}

/// The controller's entry point for one tenant.
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(namespace = tenant.namespace().as_deref().unwrap_or(""), tenant = %tenant.name_any())
)]
pub async fn reconcile(tenant: Arc<HealthcareTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = tenant.namespace().ok_or(BuildError::NoNamespace)?;
    let api: Api<HealthcareTenant> = Api::namespaced(ctx.client.clone(), &namespace);
    let subject = tenant.clone();
    let result = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            finalizer::Event::Apply(tenant) => provision(&tenant, &ctx).await,
            finalizer::Event::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics
        .reconcile_seconds
        .with_label_values::<&str>(&[])
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconciles
        .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
        .inc();
    if let Err(error) = &result {
        // The platform team sees why in `kubectl describe hct`, not only in the operator's log.
        publish(
            &ctx,
            &subject,
            EventType::Warning,
            "ReconcileFailed",
            format!("{error}; retrying"),
        )
        .await;
    }
    result
}

pub fn error_policy(tenant: Arc<HealthcareTenant>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    tracing::warn!(tenant = %tenant.name_any(), namespace = ?tenant.namespace(), %error, "reconcile failed; retrying");
    match error {
        // Delivery usually takes a moment, not a retry period.
        Error::AuditPending => Action::requeue(Duration::from_secs(2)),
        _ => Action::requeue(RETRY),
    }
}

async fn server_side_apply<K>(api: &Api<K>, object: &K, what: &str) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    // Force: the operator owns these fields; a conflicting manager's values are taken back.
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(kube_err(format!("applying {what} {name}")))
}

/// Seals an audit record into the tenant's trail. A failure (its key Secret or a sink's
/// Secret missing) is logged and shown as an Event; it does not stop the reconcile.
async fn audit(ctx: &Context, tenant: &HealthcareTenant, what: Happening) {
    if let Err(e) = ctx.audit.record(&ctx.client, tenant, &what).await {
        audit_failed(ctx, tenant, &what, &e).await;
    }
}

async fn audit_failed(
    ctx: &Context,
    tenant: &HealthcareTenant,
    what: &Happening,
    error: &crate::audit::AuditError,
) {
    tracing::warn!(tenant = %tenant.name_any(), %error, ?what, "audit record not made");
    publish(
        ctx,
        tenant,
        EventType::Warning,
        "AuditRecordFailed",
        error.to_string(),
    )
    .await;
}

async fn publish(
    ctx: &Context,
    tenant: &HealthcareTenant,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &tenant.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}

/// The tenant's children, then its add-ons.
async fn apply(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    (provisioned, spec_changed): (bool, bool),
    observed: &mut Observed,
) -> Result<children::Children, Error> {
    let media_allowed = observed.baa.is_active();
    let applied = children::reconcile(
        tenant,
        ctx,
        namespace,
        media_allowed,
        (provisioned, spec_changed),
        observed,
    )
    .await
    .map_err(Error::at(Step::Children))?;
    addons::apply(tenant, ctx, namespace, observed)
        .await
        .map_err(Error::at(Step::AddOns))?;
    relay::apply(tenant, ctx, namespace, spec_changed, observed)
        .await
        .map_err(Error::at(Step::Relay))?;
    Ok(applied)
}

/// RBAC does not let the operator write in the tenant's namespace: the status says what to
/// grant (the namespace is not one it was given), and the reconcile fails with the same words.
async fn not_permitted(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    mut observed: Observed,
    previous: &HealthcareTenantStatus,
    error: &Error,
) -> Result<Action, Error> {
    let hint = crate::rbac::grant_hint(namespace, ctx.operator_namespace.as_deref());
    observed.not_permitted = Some(hint.clone());
    write_status(tenant, ctx, &observed, previous, namespace)
        .await
        .map_err(Error::at(Step::Status))?;
    // Not labelled with its step: the errors metric says `not_permitted`, which is what an
    // SRE must act on.
    Err(Error::NotPermitted {
        action: error.forbidden_action().unwrap_or_default().to_string(),
        hint,
    })
}

/// One reconcile of a live tenant, step by step; each step's failure is labelled with it.
async fn provision(tenant: &HealthcareTenant, ctx: &Context) -> Result<Action, Error> {
    let namespace = tenant.namespace().ok_or(BuildError::NoNamespace)?;
    let now = Timestamp::now();
    let observe::Start {
        mut observed,
        previous,
        spec_changed,
        next_change,
    } = observe::start(tenant, ctx, &namespace, now)
        .await
        .map_err(Error::at(Step::Observe))?;

    if observed.spec_violations.is_empty() {
        let provisioned = previous.observed_generation.is_some();
        let applied = match apply(
            tenant,
            ctx,
            &namespace,
            (provisioned, spec_changed),
            &mut observed,
        )
        .await
        {
            Err(e) if e.forbidden_action().is_some() => {
                return not_permitted(tenant, ctx, &namespace, observed, &previous, &e).await;
            }
            applied => applied?,
        };
        report_drift(tenant, ctx, &applied.drift).await;
        observed.drift_reverted = applied
            .drift
            .iter()
            .filter(|d| d.weakens_lock)
            .map(ToString::to_string)
            .collect();
        observed.ready_media_nodes = applied.ready_media_nodes;
    }

    observe::health(tenant, ctx, &namespace, &mut observed)
        .await
        .map_err(Error::at(Step::Health))?;
    compliance(tenant, ctx, &namespace, &mut observed).await;
    write_status(tenant, ctx, &observed, &previous, &namespace)
        .await
        .map_err(Error::at(Step::Status))?;
    if !observed.spec_violations.is_empty() {
        publish(
            ctx,
            tenant,
            EventType::Warning,
            "InvalidSpec",
            observed.spec_violations.join("; "),
        )
        .await;
    }
    // Up to a fifth sooner, by uid: tenants provisioned together come back spread out.
    let settled = ctx.resync.settled;
    let early = spread(
        &tenant.uid().unwrap_or_default(),
        settled.as_millis() as u64 / 5,
    );
    let resync = Resync {
        settled: settled - Duration::from_millis(early),
        ..ctx.resync
    };
    Ok(Action::requeue(requeue_after(
        next_change,
        now,
        &observed,
        resync,
    )))
}

/// Evaluates the controls and writes the tenant's Report. A Report that cannot be written is
/// a warning Event, not a failed reconcile: media does not wait on its evidence.
async fn compliance(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    observed: &mut Observed,
) {
    let names = crate::names::ChildNames::of(tenant);
    let objects = evidence::Objects {
        tenant: tenant.name_any(),
        tls_secret: crate::build::tls_secret_name(tenant),
        config_map: names.config,
        media_nodes: names.media_nodes,
        network_policy: names.network_policy,
    };
    let findings = evidence::evaluate(&evidence::Facts::of(observed, &objects, Timestamp::now()));
    observed.compliance_report = match report::apply(tenant, ctx, namespace, &findings).await {
        Ok(name) => name,
        Err(e) => {
            tracing::warn!(tenant = %tenant.name_any(), error = %e, "compliance report not written");
            let note = format!("the compliance Report was not written: {e}");
            publish(
                ctx,
                tenant,
                EventType::Warning,
                "ComplianceReportFailed",
                note,
            )
            .await;
            None
        }
    };
    observed.compliance = Some(findings);
}

/// Soon enough for the BAA's next change of state and, while anyone reports on audit sinks,
/// for AuditSinksReady to stay current.
fn requeue_after(
    next_change: Option<Timestamp>,
    now: Timestamp,
    observed: &Observed,
    resync: Resync,
) -> Duration {
    let mut requeue = next_change
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .map(|d| d.max(Duration::from_secs(1)).min(resync.settled))
        .unwrap_or(resync.settled);
    if !observed.sinks.is_empty() {
        requeue = requeue.min(resync.sink_health);
    }
    requeue
}

async fn report_drift(tenant: &HealthcareTenant, ctx: &Context, drift: &[Drift]) {
    for d in drift {
        let kind = d.object.split(' ').next().unwrap_or("object");
        ctx.metrics
            .drift_reverted
            .with_label_values(&[kind, if d.weakens_lock { "true" } else { "false" }])
            .inc();
        let (type_, reason) = if d.weakens_lock {
            (EventType::Warning, "LockedSettingReverted")
        } else {
            (EventType::Normal, "DriftReverted")
        };
        tracing::warn!(tenant = %tenant.name_any(), drift = %d, "reverted an edit of an owned object");
        publish(ctx, tenant, type_, reason, d.to_string()).await;
        let what = Happening::DriftReverted {
            kind: kind.to_string(),
            weakened_lock: d.weakens_lock,
        };
        audit(ctx, tenant, what).await;
    }
}

async fn write_status(
    tenant: &HealthcareTenant,
    ctx: &Context,
    observed: &Observed,
    previous_status: &HealthcareTenantStatus,
    namespace: &str,
) -> Result<(), Error> {
    let previous = &previous_status.conditions[..];
    let conditions = status::conditions(observed, previous, Time(Timestamp::now()));
    let status = HealthcareTenantStatus {
        observed_generation: observed.generation,
        conditions: conditions.clone(),
        ready_media_nodes: Some(observed.ready_media_nodes),
        endpoint: observed.endpoint.clone(),
        relay_address: observed.relay.as_ref().and_then(|r| r.address.clone()),
        compliance: observed.compliance.as_deref().map(|findings| {
            let s = evidence::summarize(findings);
            bedside_crds::tenant::ComplianceSummary {
                pass: s.pass,
                warn: s.warn,
                fail: s.fail,
                not_checked: s.not_checked,
                manual: s.manual,
                report: observed.compliance_report.clone(),
            }
        }),
    };
    // The gauges go first: whoever reads the status written below finds them already there.
    record_status_metrics(
        ctx,
        namespace,
        &tenant.name_any(),
        &conditions,
        &observed.baa,
    );
    // An unchanged status is not written again: no write, no watch event, no churn.
    if &status != previous_status {
        let patch = json!({
            "apiVersion": "bedside.health/v1alpha1",
            "kind": "HealthcareTenant",
            "status": status,
        });
        let api: Api<HealthcareTenant> = Api::namespaced(ctx.client.clone(), namespace);
        let written = api
            .patch_status(
                &tenant.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(kube_err("writing the tenant's status"))?;
        ctx.status_seen_at(tenant, written.resource_version());
    }

    for c in status::transitions(previous, &conditions) {
        if c.type_ == "BAAActive" {
            let what = Happening::BaaChanged {
                active: c.status == "True",
                reason: c.reason.clone(),
            };
            audit(ctx, tenant, what).await;
        }
        let type_ = if c.status == "False" {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            tenant,
            type_,
            &c.reason,
            format!("{} is {}: {}", c.type_, c.status, c.message),
        )
        .await;
    }
    Ok(())
}

/// The tenant's conditions and its agreement's end as gauges, for dashboards and alerts.
fn record_status_metrics(
    ctx: &Context,
    namespace: &str,
    name: &str,
    conditions: &[Condition],
    baa: &BaaState,
) {
    for c in conditions {
        for status in ["True", "False", "Unknown"] {
            ctx.metrics
                .tenant_condition
                .with_label_values(&[namespace, name, &c.type_, status])
                .set(i64::from(c.status == status));
        }
    }
    let expiry = match baa {
        BaaState::Active {
            expires_on: Some(d),
        }
        | BaaState::Expired { expired_on: d } => d
            .tomorrow()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp().as_second()),
        _ => None,
    };
    if let Some(at) = expiry {
        ctx.metrics
            .baa_expiry
            .with_label_values(&[namespace, name])
            .set(at);
    }
}

async fn cleanup(tenant: &HealthcareTenant, ctx: &Context) -> Result<Action, Error> {
    // The deprovisioning goes to the tenant's sinks; the finalizer holds the tenant until they
    // have it, within a grace period (a sink down for good must not block a deletion forever).
    if !ctx.audit.deprovision_recorded(tenant)
        && let Err(e) = ctx.audit.deprovision(&ctx.client, tenant).await
    {
        audit_failed(ctx, tenant, &Happening::Deprovisioned, &e).await;
    }
    let deleted_for = tenant
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|t| Duration::try_from(Timestamp::now().duration_since(t.0)).ok())
        .unwrap_or_default();
    if !ctx.audit.drained(tenant) {
        if deleted_for < DEPROVISION_AUDIT_GRACE {
            return Err(Error::AuditPending);
        }
        publish(
            ctx,
            tenant,
            EventType::Warning,
            "AuditUndelivered",
            "the tenant's sinks did not take its last audit records within the grace period; they stay in the operator's buffer volume".into(),
        )
        .await;
    }
    ctx.audit.forget(tenant);
    publish(
        ctx,
        tenant,
        EventType::Normal,
        "Deprovisioned",
        format!(
            "tenant {} deprovisioned; its media nodes, config and keys are removed by garbage collection",
            tenant.name_any()
        ),
    )
    .await;
    if let (Some(uid), Ok(mut memo)) = (tenant.uid(), ctx.applied.lock()) {
        memo.remove(&uid);
    }
    if let Some(uid) = tenant.uid() {
        if let Ok(mut versions) = ctx.status_versions.lock() {
            versions.remove(&uid);
        }
        if let Ok(mut written) = ctx.reports_written.lock() {
            written.remove(&uid);
        }
        if let Ok(mut ends) = ctx.certificate_ends.lock() {
            ends.remove(&uid);
        }
    }
    if let Some(namespace) = tenant.namespace() {
        let name = tenant.name_any();
        let _ = ctx
            .metrics
            .baa_expiry
            .remove_label_values(&[&namespace, &name]);
    }
    Ok(Action::await_change())
}
