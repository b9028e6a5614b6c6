//! One reconcile of one tenant: fetch -> validate -> build -> diff -> apply -> status.

mod access;
pub mod drift;
mod media_set;
pub mod sinks;
pub mod status;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bedside_crds::validation::{TenantValidator, ValidationSetupError};
use bedside_crds::{HealthcareTenant, HealthcareTenantStatus};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::audit::{Happening, OperatorAudit};
use crate::baa::{self, BaaState};
use crate::build::{self, BuildError, BuildInputs};
use crate::metrics::Metrics;
use crate::names::{ChildNames, FIELD_MANAGER, FINALIZER, SERVICE_ROLE_LABEL, selector_labels};
use crate::thirdparty::certmanager::Certificate;
use drift::{Drift, Live};
use status::{CertificateState, Observed};

/// How often a settled tenant is looked at again even without a watch event.
const RESYNC: Duration = Duration::from_secs(300);
const RETRY: Duration = Duration::from_secs(15);
/// How often a tenant with media nodes is looked at again, to keep AuditSinksReady current.
pub const SINK_HEALTH_RESYNC: Duration = Duration::from_secs(30);
/// How long a deleted tenant is held for its last audit records to reach its sinks.
const DEPROVISION_AUDIT_GRACE: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("Kubernetes API call failed while {action}: {source}")]
    Kube { action: String, source: kube::Error },
    #[error("the operator cannot start: {0}")]
    Setup(String),
    #[error("{0}")]
    Finalizer(String),
    #[error(
        "the tenant's last audit records are not yet delivered to its sinks; the tenant is kept until they are, or for at most {} minutes after its deletion",
        DEPROVISION_AUDIT_GRACE.as_secs() / 60
    )]
    AuditPending,
}

impl Error {
    /// A short, fixed label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Build(_) => "build",
            Error::Kube { .. } => "kube_api",
            Error::Setup(_) => "setup",
            Error::Finalizer(_) => "finalizer",
            Error::AuditPending => "audit_pending",
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
    /// How often tenants with audit sink reports are reconciled ([`SINK_HEALTH_RESYNC`]).
    pub sink_health_resync: Duration,
}

/// The children a reconcile applied: a hash of what it sent and the resourceVersions the
/// API server returned. A later reconcile that finds the same versions live, and would send
/// the same objects, has nothing to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRecord {
    desired_hash: String,
    versions: Vec<Option<String>>,
    /// A removed pod's media Service was kept for its draining pod: the next reconcile must
    /// look again rather than skip.
    prune_pending: bool,
}

fn applied_hash(desired: &build::Desired, pdb: &DynamicObject) -> String {
    let text = serde_json::to_string(&(
        &desired.config_map,
        &desired.media_nodes,
        &desired.services,
        &desired.network_policy,
        &desired.access.service_account,
        &desired.access.role,
        &desired.access.role_binding,
        pdb,
    ))
    .unwrap_or_default();
    build::config::config_hash(&text)
}

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
        tracing::info!(pdb = %pdb_resource.api_version, cert_manager, service_monitors = service_monitors.is_some(), "discovered the cluster's APIs");
        Ok(Self {
            applied: Default::default(),
            audit: OperatorAudit::new(audit_dir, identity),
            operator_namespace: std::env::var("POD_NAMESPACE").ok(),
            sink_health_resync: SINK_HEALTH_RESYNC,
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
    pub fn with_sink_health_resync(mut self, every: Duration) -> Self {
        self.sink_health_resync = every;
        self
    }
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

/// The join-token and audit keys: created once; an existing Secret is never touched.
/// Returns whether this call created them.
async fn ensure_keys(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
) -> Result<bool, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = ChildNames::of(tenant).keys;
    if secrets
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("reading Secret {name}")))?
        .is_some()
    {
        return Ok(false);
    }
    let random = |len: usize| -> Result<Vec<u8>, Error> {
        let mut key = vec![0u8; len];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| Error::Setup("no system randomness".into()))?;
        Ok(key)
    };
    let secret = build::keys_secret(tenant, random(32)?, random(32)?)?;
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(tenant = %tenant.name_any(), secret = %name, "created the tenant's key Secret");
            Ok(true)
        }
        // Another reconcile (or a restarted operator) made it first: keep theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            action: format!("creating Secret {name}"),
            source,
        }),
    }
}

async fn provision(tenant: &HealthcareTenant, ctx: &Context) -> Result<Action, Error> {
    let namespace = tenant.namespace().ok_or(BuildError::NoNamespace)?;
    let client = ctx.client.clone();
    let names = ChildNames::of(tenant);
    let now = Timestamp::now();
    let (baa_state, next_change) = baa::state_at(&tenant.spec.baa, now);
    // The status as stored now, not as the watch cache last saw it: the reconcile before this
    // one may have written it a moment ago, and its conditions carry over.
    let tenants: Api<HealthcareTenant> = Api::namespaced(client.clone(), &namespace);
    let previous = tenants
        .get_status(&tenant.name_any())
        .await
        .map_err(kube_err("reading the tenant's status"))?
        .status
        .unwrap_or_default();

    let mut observed = Observed {
        generation: tenant.metadata.generation,
        baa: baa_state,
        spec_violations: Vec::new(),
        drift_reverted: Vec::new(),
        certificate: CertificateState::CertManagerMissing,
        ready_media_nodes: 0,
        media_replicas: 0,
        unaddressed: Vec::new(),
        endpoint: None,
        sinks: Vec::new(),
    };
    let spec_changed = previous.observed_generation.is_some()
        && previous.observed_generation != tenant.metadata.generation;

    // Validate: on servers without CEL (before 1.25) the CRD's CEL rules never ran.
    let as_json = serde_json::to_value(tenant).map_err(|e| BuildError::Invalid {
        kind: "HealthcareTenant",
        source: e,
    })?;
    observed.spec_violations = ctx
        .validator
        .validate(&as_json)
        .into_iter()
        .filter(|v| !v.path.starts_with("status"))
        .map(|v| v.to_string())
        .collect();
    if spec_changed {
        let refused = !observed.spec_violations.is_empty();
        audit(ctx, tenant, Happening::SettingsChanged { refused }).await;
    }

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let mut live_media_nodes = None;

    if observed.spec_violations.is_empty() {
        let desired = build::desired(
            tenant,
            BuildInputs {
                media_allowed: baa_state.is_active(),
                operator_namespace: ctx.operator_namespace.clone(),
            },
        )?;
        observed.media_replicas = desired
            .media_nodes
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        if ensure_keys(tenant, ctx, &namespace).await? {
            audit(ctx, tenant, Happening::Provisioned).await;
        }

        let mut live = Live {
            config_map: configmaps
                .get_opt(&names.config)
                .await
                .map_err(kube_err("reading the config ConfigMap"))?,
            media_nodes: sets
                .get_opt(&names.media_nodes)
                .await
                .map_err(kube_err("reading the media StatefulSet"))?,
            services: Vec::new(),
        };
        for service in &desired.services {
            let name = service.name_any();
            live.services.push(
                services
                    .get_opt(&name)
                    .await
                    .map_err(kube_err(format!("reading Service {name}")))?,
            );
        }
        let live_addresses = configmaps
            .get_opt(&names.addresses)
            .await
            .map_err(kube_err("reading the media addresses ConfigMap"))?;
        let provisioned = previous.observed_generation.is_some();
        let drift = drift::find(&live, &desired, provisioned, spec_changed);

        let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
        let pdbs: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &ctx.pdb_resource);
        let pdb = build::pod_disruption_budget(tenant, &ctx.pdb_resource)?;
        let live_policy = policies
            .get_opt(&names.network_policy)
            .await
            .map_err(kube_err("reading the NetworkPolicy"))?;
        let live_pdb = pdbs
            .get_opt(&names.disruption_budget)
            .await
            .map_err(kube_err("reading the PodDisruptionBudget"))?;
        let mut live_versions: Vec<Option<String>> = vec![
            live.config_map.as_ref().and_then(|o| o.resource_version()),
            live.media_nodes.as_ref().and_then(|o| o.resource_version()),
            live_addresses.as_ref().and_then(|o| o.resource_version()),
        ];
        live_versions.extend(
            live.services
                .iter()
                .map(|o| o.as_ref().and_then(|o| o.resource_version())),
        );
        live_versions.push(live_policy.as_ref().and_then(|o| o.resource_version()));
        live_versions.push(live_pdb.as_ref().and_then(|o| o.resource_version()));
        live_versions.extend(access::live_versions(&client, &namespace, &desired.access).await?);
        let desired_hash = applied_hash(&desired, &pdb);
        let memo_key = tenant
            .uid()
            .unwrap_or_else(|| format!("{namespace}/{}", tenant.name_any()));
        let unchanged_since_our_apply = ctx
            .applied
            .lock()
            .ok()
            .and_then(|memo| memo.get(&memo_key).cloned())
            .is_some_and(|record| {
                record.desired_hash == desired_hash
                    && !record.prune_pending
                    && live_versions.iter().all(Option::is_some)
                    && record.versions == live_versions
            });

        if unchanged_since_our_apply {
            // Every child is exactly as our last apply left it, and we would apply the same
            // again: server-side apply (the API server's most expensive write) is skipped.
            live_media_nodes = live.media_nodes.clone();
            let live_services: Vec<Service> = live.services.iter().flatten().cloned().collect();
            observed.unaddressed =
                build::media_addresses(tenant, observed.media_replicas, &live_services).missing;
            observed.endpoint = status::endpoint(tenant, &live_services);
        } else {
            // Services first: a node port is allocated when its Service is created, so a new
            // pod's address is in the addresses ConfigMap before the pod starts.
            let mut applied_services = Vec::new();
            for service in &desired.services {
                applied_services.push(server_side_apply(&services, service, "Service").await?);
            }
            let prune_pending =
                prune_media_services(&client, &services, tenant, &desired.services).await?;
            let addresses =
                build::media_addresses(tenant, observed.media_replicas, &applied_services);
            observed.unaddressed = addresses.missing.clone();
            observed.endpoint = status::endpoint(tenant, &applied_services);
            let mut versions = vec![
                server_side_apply(&configmaps, &desired.config_map, "ConfigMap")
                    .await?
                    .resource_version(),
            ];
            // The pods' ServiceAccount and Role before the pods.
            let access_versions = access::apply(&client, &namespace, &desired.access).await?;
            let set = media_set::apply(
                &client,
                tenant,
                live.media_nodes.as_ref(),
                &desired.media_nodes,
            )
            .await?;
            media_set::remove_legacy_deployment(&client, &namespace, tenant, &names.media_nodes)
                .await?;
            let moving =
                media_set::move_pods_onto_claims(&client, tenant, &desired.media_nodes).await?;
            versions.push(set.resource_version());
            live_media_nodes = Some(set);
            versions.push(
                server_side_apply(
                    &configmaps,
                    &build::addresses_config_map(tenant, &addresses)?,
                    "ConfigMap",
                )
                .await?
                .resource_version(),
            );
            versions.extend(applied_services.iter().map(|s| s.resource_version()));
            versions.push(
                server_side_apply(&policies, &desired.network_policy, "NetworkPolicy")
                    .await?
                    .resource_version(),
            );
            versions.push(
                server_side_apply(&pdbs, &pdb, "PodDisruptionBudget")
                    .await?
                    .resource_version(),
            );
            versions.extend(access_versions);
            if let Ok(mut memo) = ctx.applied.lock() {
                memo.insert(
                    memo_key,
                    AppliedRecord {
                        desired_hash,
                        versions,
                        // Looked at again (not skipped) until every pod is where it should be.
                        prune_pending: prune_pending || moving,
                    },
                );
            }
        }

        if ctx.cert_manager
            && let Some(certificate) = build::certificate(tenant)?
        {
            let certificates: Api<Certificate> = Api::namespaced(client.clone(), &namespace);
            let applied = server_side_apply(&certificates, &certificate, "Certificate").await?;
            let ready = applied
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            observed.certificate = CertificateState::Certificate {
                name: names.certificate_secret.clone(),
                ready: ready.is_some_and(|c| c.status == "True"),
                message: ready
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| "cert-manager has not reported on it yet".into()),
            };
        }
        if let (true, Some(resource)) = (
            tenant.spec.monitoring.service_monitor,
            &ctx.service_monitors,
        ) {
            let monitors: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &namespace, resource);
            server_side_apply(
                &monitors,
                &build::service_monitor(tenant, resource)?,
                "ServiceMonitor",
            )
            .await?;
        }

        report_drift(tenant, ctx, &drift).await;
        observed.drift_reverted = drift
            .iter()
            .filter(|d| d.weakens_lock)
            .map(ToString::to_string)
            .collect();
    }

    if let Some(name) = &tenant.spec.tls.secret_name {
        observed.certificate = {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let exists = secrets
                .get_opt(name)
                .await
                .map_err(kube_err(format!("reading the TLS Secret {name}")))?
                .is_some();
            CertificateState::TenantSecret {
                name: name.clone(),
                exists,
            }
        };
    }
    observed.ready_media_nodes = live_media_nodes
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let selector: Vec<String> = selector_labels(tenant)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    observed.sinks = sinks::node_reports(&client, &namespace, &selector.join(",")).await;
    let own = ctx.audit.sink_reports(tenant);
    if !own.is_empty() {
        observed.sinks.push(status::SinkReport {
            reporter: "operator".into(),
            health: Ok(status::AuditHealth {
                sinks: own,
                ..Default::default()
            }),
        });
    }

    write_status(tenant, ctx, &observed, &previous, &namespace).await?;
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

    let mut requeue = next_change
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .map(|d| d.max(Duration::from_secs(1)).min(RESYNC))
        .unwrap_or(RESYNC);
    if !observed.sinks.is_empty() {
        requeue = requeue.min(ctx.sink_health_resync);
    }
    Ok(Action::requeue(requeue))
}

/// Deletes the per-pod media Services of pods that no longer exist (after a scale-down), and
/// only those: the others keep their addresses, so calls on them go on.
/// Deletes the media Services of pods a scale-down removed, once each pod is gone: a pod that
/// still drains keeps its Service, or kube-proxy would cut its calls' media. True when one was
/// kept (the tenant is looked at again until it goes).
async fn prune_media_services(
    client: &Client,
    services: &Api<Service>,
    tenant: &HealthcareTenant,
    desired: &[Service],
) -> Result<bool, Error> {
    let tenant_selector = format!("{}={}", crate::names::TENANT_LABEL, tenant.name_any());
    let live = services
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("{tenant_selector},{SERVICE_ROLE_LABEL}=media")),
        )
        .await
        .map_err(kube_err("listing the media Services"))?;
    let removed: Vec<String> = live
        .into_iter()
        .map(|s| s.name_any())
        .filter(|name| !desired.iter().any(|d| d.name_any() == *name))
        .collect();
    if removed.is_empty() {
        return Ok(false);
    }
    // Each media Service is named after its pod.
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), &tenant.namespace().unwrap_or_default());
    let running: Vec<String> = pods
        .list(&kube::api::ListParams::default().labels(&tenant_selector))
        .await
        .map_err(kube_err("listing the media pods"))?
        .into_iter()
        .map(|p| p.name_any())
        .collect();
    let mut kept = false;
    for name in removed {
        if running.contains(&name) {
            kept = true;
            continue;
        }
        match services.delete(&name, &Default::default()).await {
            Ok(_) => tracing::info!(service = %name, "deleted the media Service of a removed pod"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("deleting Service {name}"),
                    source,
                });
            }
        }
    }
    Ok(kept)
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
    };
    // An unchanged status is not written again: no write, no watch event, no churn.
    if &status != previous_status {
        let patch = json!({
            "apiVersion": "bedside.health/v1alpha1",
            "kind": "HealthcareTenant",
            "status": status,
        });
        let api: Api<HealthcareTenant> = Api::namespaced(ctx.client.clone(), namespace);
        api.patch_status(
            &tenant.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(kube_err("writing the tenant's status"))?;
    }

    let name = tenant.name_any();
    for c in &conditions {
        for status in ["True", "False", "Unknown"] {
            ctx.metrics
                .tenant_condition
                .with_label_values(&[namespace, &name, &c.type_, status])
                .set(i64::from(c.status == status));
        }
    }
    let expiry = match observed.baa {
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
            .with_label_values(&[namespace, &name])
            .set(at);
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
    if let Some(namespace) = tenant.namespace() {
        let name = tenant.name_any();
        let _ = ctx
            .metrics
            .baa_expiry
            .remove_label_values(&[&namespace, &name]);
    }
    Ok(Action::await_change())
}
