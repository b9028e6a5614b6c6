//! The tenant's children: the desired objects built (pure), the live ones read, drift found,
//! and everything applied in order, unless every child is exactly as our last apply left it.

use std::time::{Duration, Instant};

use bedside_crds::HealthcareTenant;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use super::drift::{self, Drift, Live};
use super::status::{self, Observed};
use super::{Context, Error, access, audit, kube_err, media_set, server_side_apply};
use crate::audit::Happening;
use crate::build::{self, BuildInputs, Desired};
use crate::names::{ChildNames, KEYS_OF_ANNOTATION, SERVICE_ROLE_LABEL};

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
    /// What the children showed when they were last read from the API server.
    seen: Seen,
    /// When the children (and the keys Secrets, which no watch covers) were last read from
    /// the API server.
    read_at: Instant,
}

/// What a reconcile takes from the children for the status, kept for the reconciles that
/// confirm them unchanged from the watch caches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    ready_media_nodes: i32,
    unaddressed: Vec<String>,
    endpoint: Option<String>,
}

impl AppliedRecord {
    /// Every child is at the version this record holds and the tenant would be sent the same
    /// objects: there is nothing to apply.
    fn unchanged(&self, desired_hash: &str, versions: &[Option<String>]) -> bool {
        self.desired_hash == desired_hash
            && !self.prune_pending
            && versions.iter().all(Option::is_some)
            && self.versions == versions
    }

    /// What the children still show, when the watch caches' versions say they are unchanged
    /// and the last read from the API server is recent enough.
    fn confirmed(
        &self,
        desired_hash: &str,
        cached: &[Option<String>],
        read_every: Duration,
    ) -> Option<&Seen> {
        let confirmed = self.unchanged(desired_hash, cached) && self.read_at.elapsed() < read_every;
        confirmed.then_some(&self.seen)
    }
}

/// How long the children may go unread from the API server when the watch caches show no
/// change: an hour, a little less for some tenants (by uid) so that thousands provisioned
/// together are not read again together.
fn read_every(uid: &str) -> Duration {
    let spread = super::spread(uid, FULL_READ.as_secs() / 4);
    FULL_READ - Duration::from_secs(spread)
}

const FULL_READ: Duration = Duration::from_secs(3600);

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

/// What the compliance evidence reads of the desired objects: a reconcile that returns has
/// applied them (or confirmed them at the versions it applied).
pub(super) fn built(desired: &Desired) -> status::Built {
    let config = desired
        .config_map
        .data
        .as_ref()
        .and_then(|d| d.get(crate::names::CONFIG_FILE))
        .and_then(|text| serde_yaml::from_str(text).ok());
    status::Built {
        config,
        media_pod: desired
            .media_nodes
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone()),
    }
}

/// What reconciling the children leaves for the rest of the reconcile.
pub(super) struct Children {
    /// Ready media pods, as the StatefulSet's status counts them.
    pub ready_media_nodes: i32,
    pub drift: Vec<Drift>,
}

/// Builds, reads, compares and applies the tenant's children; records in `observed` how many
/// media pods it wants and which lack an address.
pub(super) async fn reconcile(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    media_allowed: bool,
    (provisioned, spec_changed): (bool, bool),
    observed: &mut Observed,
) -> Result<Children, Error> {
    let desired = build::desired(
        tenant,
        BuildInputs {
            media_allowed,
            operator_namespace: ctx.operator_namespace.clone(),
            mixed_protocol_load_balancers: ctx
                .mixed_protocol_load_balancers
                .load(std::sync::atomic::Ordering::Relaxed),
        },
    )?;
    observed.media_replicas = desired
        .media_nodes
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(0);
    observed.built = Some(built(&desired));
    let pdb = build::pod_disruption_budget(tenant, &ctx.pdb_resource)?;
    let desired_hash = applied_hash(&desired, &pdb);
    let (memo_key, record) = recall(ctx, tenant, namespace);
    if let Some(children) = confirm_from_caches(
        ctx,
        (namespace, &ChildNames::of(tenant)),
        &desired,
        (&desired_hash, record.as_ref()),
        read_every(&memo_key),
        observed,
    ) {
        return Ok(children);
    }
    ctx.metrics
        .children_checks
        .with_label_values(&["api"])
        .inc();

    if ensure_keys(tenant, ctx, namespace).await? {
        audit(ctx, tenant, Happening::Provisioned).await;
    }
    let (live, live_versions) = read(ctx, namespace, tenant, &desired).await?;
    let drift = drift::find(&live, &desired, provisioned, spec_changed);
    let unchanged_since_our_apply = record
        .as_ref()
        .is_some_and(|record| record.unchanged(&desired_hash, &live_versions));
    let (set, versions, prune_pending) = if unchanged_since_our_apply {
        // Every child is exactly as our last apply left it, and we would apply the same
        // again: server-side apply (the API server's most expensive write) is skipped.
        let live_services: Vec<Service> = live.services.iter().flatten().cloned().collect();
        observed.unaddressed =
            build::media_addresses(tenant, observed.media_replicas, &live_services).missing;
        observed.endpoint = status::endpoint(tenant, &live_services);
        (live.media_nodes, live_versions, false)
    } else {
        let (set, versions, prune_pending) = apply(
            tenant,
            ctx,
            namespace,
            &desired,
            &pdb,
            live.media_nodes.as_ref(),
            observed,
        )
        .await?;
        (Some(set), versions, prune_pending)
    };
    let ready_media_nodes = set
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let seen = Seen {
        ready_media_nodes,
        unaddressed: observed.unaddressed.clone(),
        endpoint: observed.endpoint.clone(),
    };
    remember(ctx, memo_key, (desired_hash, versions, prune_pending), seen);
    Ok(Children {
        ready_media_nodes,
        drift,
    })
}

/// The tenant's key in the memo of applies, and what the last read (and apply) left there.
fn recall(
    ctx: &Context,
    tenant: &HealthcareTenant,
    namespace: &str,
) -> (String, Option<AppliedRecord>) {
    let memo_key = tenant
        .uid()
        .unwrap_or_else(|| format!("{namespace}/{}", tenant.name_any()));
    let record = ctx
        .applied
        .lock()
        .ok()
        .and_then(|memo| memo.get(&memo_key).cloned());
    (memo_key, record)
}

/// What this read (and apply) left, for the next reconcile to compare with.
fn remember(
    ctx: &Context,
    memo_key: String,
    (desired_hash, versions, prune_pending): (String, Vec<Option<String>>, bool),
    seen: Seen,
) {
    let record = AppliedRecord {
        desired_hash,
        versions,
        prune_pending,
        seen,
        read_at: Instant::now(),
    };
    if let Ok(mut memo) = ctx.applied.lock() {
        memo.insert(memo_key, record);
    }
}

/// The children as the last read left them, when the watch caches confirm that nothing
/// changed since: no API request at all (a settled tenant's periodic look costs nothing).
fn confirm_from_caches(
    ctx: &Context,
    (namespace, names): (&str, &ChildNames),
    desired: &Desired,
    (desired_hash, record): (&str, Option<&AppliedRecord>),
    read_every: Duration,
    observed: &mut Observed,
) -> Option<Children> {
    let cached = ctx.cached_versions(namespace, names, desired)?;
    let seen = record?.confirmed(desired_hash, &cached, read_every)?;
    ctx.metrics
        .children_checks
        .with_label_values(&["cache"])
        .inc();
    observed.unaddressed = seen.unaddressed.clone();
    observed.endpoint = seen.endpoint.clone();
    Some(Children {
        ready_media_nodes: seen.ready_media_nodes,
        drift: Vec::new(),
    })
}

/// The live children, and their resourceVersions in the order [`apply`] returns its own.
async fn read(
    ctx: &Context,
    namespace: &str,
    tenant: &HealthcareTenant,
    desired: &Desired,
) -> Result<(Live, Vec<Option<String>>), Error> {
    let client = &ctx.client;
    let names = ChildNames::of(tenant);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
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
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let pdbs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &ctx.pdb_resource);
    let live_policy = policies
        .get_opt(&names.network_policy)
        .await
        .map_err(kube_err("reading the NetworkPolicy"))?;
    let live_pdb = pdbs
        .get_opt(&names.disruption_budget)
        .await
        .map_err(kube_err("reading the PodDisruptionBudget"))?;
    let mut versions: Vec<Option<String>> = vec![
        live.config_map.as_ref().and_then(|o| o.resource_version()),
        live.media_nodes.as_ref().and_then(|o| o.resource_version()),
        live_addresses.as_ref().and_then(|o| o.resource_version()),
    ];
    versions.extend(
        live.services
            .iter()
            .map(|o| o.as_ref().and_then(|o| o.resource_version())),
    );
    versions.push(live_policy.as_ref().and_then(|o| o.resource_version()));
    versions.push(live_pdb.as_ref().and_then(|o| o.resource_version()));
    versions.extend(access::live_versions(client, namespace, &desired.access).await?);
    Ok((live, versions))
}

/// Applies every child in order; returns the media StatefulSet, the resourceVersions the API
/// server returned (in [`read`]'s order) and whether the next reconcile must look again.
async fn apply(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    desired: &Desired,
    pdb: &DynamicObject,
    live_media_nodes: Option<&StatefulSet>,
    observed: &mut Observed,
) -> Result<(StatefulSet, Vec<Option<String>>, bool), Error> {
    let client = &ctx.client;
    let names = ChildNames::of(tenant);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    // The NetworkPolicy before anything that starts a pod: no media pod runs unprotected.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let policy_version = server_side_apply(&policies, &desired.network_policy, "NetworkPolicy")
        .await?
        .resource_version();
    // Then Services: a node port is allocated when its Service is created, so a new pod's
    // address is in the addresses ConfigMap before the pod starts.
    let mut applied_services = Vec::new();
    for service in &desired.services {
        applied_services.push(apply_service(ctx, &services, service).await?);
    }
    let prune_pending = prune_media_services(client, &services, tenant, &desired.services).await?;
    let addresses = build::media_addresses(tenant, observed.media_replicas, &applied_services);
    observed.unaddressed = addresses.missing.clone();
    observed.endpoint = status::endpoint(tenant, &applied_services);
    let mut versions = vec![
        server_side_apply(&configmaps, &desired.config_map, "ConfigMap")
            .await?
            .resource_version(),
    ];
    // The pods' ServiceAccount and Role before the pods.
    let access_versions = access::apply(client, namespace, &desired.access).await?;
    let set = media_set::apply(client, tenant, live_media_nodes, &desired.media_nodes).await?;
    media_set::remove_legacy_deployment(client, namespace, tenant, &names.media_nodes).await?;
    let moving = media_set::move_pods_onto_claims(client, tenant, &desired.media_nodes).await?;
    versions.push(set.resource_version());
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
    versions.push(policy_version);
    let pdbs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &ctx.pdb_resource);
    versions.push(
        server_side_apply(&pdbs, pdb, "PodDisruptionBudget")
            .await?
            .resource_version(),
    );
    versions.extend(access_versions);
    // Looked at again (not skipped) until every pod is where it should be.
    Ok((set, versions, prune_pending || moving))
}

/// Applies a Service. An API server before Kubernetes 1.24 refuses a LoadBalancer with both
/// UDP and TCP ports: then the media goes UDP only (ICE-TCP off behind load balancers), from
/// now on for every tenant, said once in the log. A NodePort Service whose TCP node port
/// differs from its UDP one (added to a Service made before ICE-TCP) gets the UDP one, so the
/// pod's one advertised address serves both.
async fn apply_service(
    ctx: &Context,
    services: &Api<Service>,
    service: &Service,
) -> Result<Service, Error> {
    let applied = match server_side_apply(services, service, "Service").await {
        Err(Error::Kube {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 422
            && status.message.contains("protocol")
            && build::has_tcp_media_port(service) =>
        {
            if ctx
                .mixed_protocol_load_balancers
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(message = %status.message, "this cluster refuses LoadBalancer \
                    Services with both UDP and TCP: media behind load balancers is UDP only, \
                    without ICE-TCP (Kubernetes 1.24 and later take them; NodePort tenants keep \
                    ICE-TCP)");
            }
            server_side_apply(services, &build::without_tcp_media_port(service), "Service").await?
        }
        other => other?,
    };
    match build::tcp_node_port_pin(&applied) {
        Some(patch) => services
            .patch(
                &applied.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(kube_err(
                "giving a media Service's TCP port the UDP port's node port",
            )),
        None => Ok(applied),
    }
}

/// The tenant's key Secret, its visits API credentials and its relay's secret: each created
/// once; an existing Secret is never touched (the platform team rotates API credentials in
/// it). True when the keys were created now (the tenant was provisioned).
async fn ensure_keys(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
) -> Result<bool, Error> {
    let random = |len: usize| -> Result<Vec<u8>, Error> {
        let mut key = vec![0u8; len];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| Error::Setup("no system randomness".into()))?;
        Ok(key)
    };
    let names = ChildNames::of(tenant);
    let created = create_once(ctx, namespace, &names.keys, || {
        Ok(build::keys_secret(tenant, random(32)?, random(32)?)?)
    })
    .await?;
    if !created {
        keys_are_the_tenants(tenant, ctx, namespace, &names.keys).await?;
    }
    let hex = |len: usize| -> Result<String, Error> {
        Ok(random(len)?.iter().map(|b| format!("{b:02x}")).collect())
    };
    create_once(ctx, namespace, &names.api_credentials, || {
        Ok(build::api_secret(tenant, hex(32)?)?)
    })
    .await?;
    // The secret the tenant's TURN relay shares with the media nodes, before the pods that
    // mount it.
    if tenant.spec.relay.is_some() {
        create_once(ctx, namespace, &names.relay_secret, || {
            Ok(build::relay::relay_secret(tenant, hex(32)?)?)
        })
        .await?;
    }
    Ok(created)
}

/// Whose keys Secret `name` is: the operator's for this tenant, or refused. Whoever can
/// create a Secret named like the tenant's keys could otherwise sign host tokens and audit
/// records that verify. A Secret of an older operator (owned by the tenant through an owner
/// reference) is taken over: marked with the tenant's uid, the reference dropped so it
/// outlives the tenant.
async fn keys_are_the_tenants(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(secret) = secrets
        .get_metadata_opt(name)
        .await
        .map_err(kube_err(format!("reading Secret {name}")))?
    else {
        return Ok(());
    };
    let uid = tenant.uid().unwrap_or_default();
    match keys_owner(&secret.metadata, &uid) {
        KeysOwner::This => Ok(()),
        KeysOwner::ThisByOwnerReference => {
            let patch = serde_json::json!({"metadata": {
                "ownerReferences": null,
                "annotations": {KEYS_OF_ANNOTATION: uid},
            }});
            secrets
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err(format!("retaining Secret {name} past the tenant")))?;
            Ok(())
        }
        KeysOwner::Deleted(other) => Err(Error::ForeignKeys {
            name: name.to_string(),
            why: format!(
                "it holds the keys of a deleted tenant of the same name (uid {other}), kept to                  verify that tenant's audit records: move it to your key escrow (kubectl get                  secret {name} -o yaml > escrow.yaml), delete it, and the operator creates new keys"
            ),
        }),
        KeysOwner::Unknown => Err(Error::ForeignKeys {
            name: name.to_string(),
            why: "the operator did not create it, and keys of unknown origin could sign host                   tokens and audit records: delete it and the operator creates the tenant's keys"
                .to_string(),
        }),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum KeysOwner {
    This,
    ThisByOwnerReference,
    Deleted(String),
    Unknown,
}

fn keys_owner(meta: &ObjectMeta, uid: &str) -> KeysOwner {
    let marked = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(KEYS_OF_ANNOTATION));
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.kind == "HealthcareTenant");
    match marked {
        Some(marked) if marked == uid => KeysOwner::This,
        Some(marked) => KeysOwner::Deleted(marked.clone()),
        None if owned => KeysOwner::ThisByOwnerReference,
        None => KeysOwner::Unknown,
    }
}

/// Creates Secret `name` from `make` unless it exists; true when this call created it.
async fn create_once(
    ctx: &Context,
    namespace: &str,
    name: &str,
    make: impl FnOnce() -> Result<Secret, Error>,
) -> Result<bool, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    if secrets
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading Secret {name}")))?
        .is_some()
    {
        return Ok(false);
    }
    match secrets.create(&PostParams::default(), &make()?).await {
        Ok(_) => {
            tracing::info!(namespace, secret = %name, "created a tenant's Secret");
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn record(versions: &[&str], read_ago: Duration) -> AppliedRecord {
        AppliedRecord {
            desired_hash: "h1".into(),
            versions: versions.iter().map(|v| Some(v.to_string())).collect(),
            prune_pending: false,
            seen: Seen {
                ready_media_nodes: 2,
                unaddressed: Vec::new(),
                endpoint: Some("https://telehealth.example".into()),
            },
            read_at: Instant::now() - read_ago,
        }
    }

    #[test]
    fn the_caches_confirm_only_every_child_at_the_version_applied_and_a_recent_read() {
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        let cached = |v: &[Option<&str>]| -> Vec<Option<String>> {
            v.iter().map(|v| v.map(str::to_string)).collect()
        };
        let settled = record(&["1", "2", "3"], minute);
        let seen = settled.confirmed("h1", &cached(&[Some("1"), Some("2"), Some("3")]), hour);
        assert_eq!(seen.map(|s| s.ready_media_nodes), Some(2));
        // A child edited (or its status moved), deleted, or not yet seen by its watch.
        assert!(
            settled
                .confirmed("h1", &cached(&[Some("1"), Some("9"), Some("3")]), hour)
                .is_none()
        );
        assert!(
            settled
                .confirmed("h1", &cached(&[Some("1"), None, Some("3")]), hour)
                .is_none()
        );
        // The tenant would get other objects now (its spec or the BAA changed).
        let all = cached(&[Some("1"), Some("2"), Some("3")]);
        assert!(settled.confirmed("h2", &all, hour).is_none());
        // Read too long ago: the keys Secrets, which no watch covers, are looked at again.
        assert!(
            record(&["1", "2", "3"], hour)
                .confirmed("h1", &all, hour)
                .is_none()
        );
        // A draining pod's Service is waiting to be removed.
        let pruning = AppliedRecord {
            prune_pending: true,
            ..settled.clone()
        };
        assert!(pruning.confirmed("h1", &all, hour).is_none());
    }

    #[test]
    fn tenants_provisioned_together_are_read_again_spread_over_a_quarter_hour() {
        let periods: std::collections::BTreeSet<u64> = (0..200)
            .map(|i| read_every(&format!("uid-{i}")).as_secs())
            .collect();
        assert!(
            periods.iter().all(|s| (2700..=3600).contains(s)),
            "{periods:?}"
        );
        assert!(periods.len() > 150, "spread, not bunched: {periods:?}");
        assert_eq!(
            read_every("uid-7"),
            read_every("uid-7"),
            "the same for a tenant"
        );
    }

    #[test]
    fn a_keys_secret_is_the_tenants_only_by_its_mark_or_an_older_operators_owner_reference() {
        let marked = |uid: &str| ObjectMeta {
            annotations: Some([(KEYS_OF_ANNOTATION.to_string(), uid.to_string())].into()),
            ..Default::default()
        };
        let owned_by = |kind: &str, uid: &str| ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                kind: kind.into(),
                uid: uid.into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(keys_owner(&marked("u-1"), "u-1"), KeysOwner::This);
        assert_eq!(
            keys_owner(&marked("u-0"), "u-1"),
            KeysOwner::Deleted("u-0".into())
        );
        assert_eq!(
            keys_owner(&owned_by("HealthcareTenant", "u-1"), "u-1"),
            KeysOwner::ThisByOwnerReference
        );
        assert_eq!(
            keys_owner(&owned_by("Deployment", "u-1"), "u-1"),
            KeysOwner::Unknown
        );
        assert_eq!(
            keys_owner(&ObjectMeta::default(), "u-1"),
            KeysOwner::Unknown
        );
    }
}
