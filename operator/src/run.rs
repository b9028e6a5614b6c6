//! Wiring: the controller behind a leader lease, and the /metrics, /healthz, /readyz server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bedside_crds::HealthcareTenant;
use futures::StreamExt;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};

use crate::names::FIELD_MANAGER;
use crate::reconcile::watched::Watched;
use crate::reconcile::{self, Context, Error};
use crate::thirdparty::certmanager::Certificate;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where /metrics, /healthz and /readyz are served.
    pub http_addr: Option<SocketAddr>,
    /// Namespace of the leader Lease; None runs without leader election (one replica only).
    pub lease_namespace: Option<String>,
    /// This replica's name in the Lease (the Pod name).
    pub identity: String,
    /// Tenants reconciled at once; more only queue up behind the API server's in-flight limit.
    pub concurrency: u16,
    /// Buffers of the operator's own audit records, per tenant (a volume of its pod).
    pub audit_dir: std::path::PathBuf,
    /// How often tenants are looked at again without a watch event.
    pub resync: reconcile::Resync,
}

pub const LEASE_NAME: &str = "bedside-operator-leader";

/// Runs the operator until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    check_crd_installed(&client).await?;
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            &settings.identity,
            settings.audit_dir.clone(),
        )
        .await?
        .with_resync(settings.resync),
    );
    tokio::spawn(close_idle_audit_trails(ctx.clone()));
    let leading = Arc::new(AtomicBool::new(false));
    if let Some(addr) = settings.http_addr {
        serve_http(addr, ctx.clone(), leading.clone()).await?;
    }
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    let Some(lease_namespace) = settings.lease_namespace.clone() else {
        leading.store(true, Ordering::SeqCst);
        controller(ctx, settings.concurrency, shutdown).await;
        return Ok(());
    };

    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(lease_namespace)
        .with_identity(settings.identity.clone())
        .with_field_manager(FIELD_MANAGER)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|e| Error::Setup(format!("leader election: {e}")))?;
    let (mut is_leader, lease_task) = manager.watch().await;
    loop {
        // Wait to lead (or to be told to stop).
        tokio::select! {
            _ = shutdown.clone() => break,
            changed = is_leader.wait_for(|leader| *leader) => {
                if changed.is_err() { break; }
            }
        }
        tracing::info!(identity = %settings.identity, "leading: reconciling tenants");
        leading.store(true, Ordering::SeqCst);
        let mut lost = is_leader.clone();
        let stop = {
            let shutdown = shutdown.clone();
            async move {
                tokio::select! {
                    _ = shutdown => {},
                    _ = lost.wait_for(|leader| !*leader) => {},
                }
            }
        };
        controller(ctx.clone(), settings.concurrency, stop).await;
        leading.store(false, Ordering::SeqCst);
        tracing::info!(identity = %settings.identity, "no longer leading");
        if futures::FutureExt::now_or_never(shutdown.clone()).is_some() {
            break;
        }
    }
    drop(is_leader);
    // Dropping the receiver makes the lease task release the lease.
    let _ = lease_task.await;
    Ok(())
}

/// A tenant's audit trail stays open only while it has work: its records pending delivery or
/// its last checkpoint not yet sealed. With thousands of tenants an open trail per tenant
/// (tasks, buffers, metrics) would dominate the operator's memory.
async fn close_idle_audit_trails(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(crate::audit::IDLE_TRAIL / 2);
    loop {
        tick.tick().await;
        let closed = ctx.audit.close_idle(std::time::Instant::now());
        if closed > 0 {
            tracing::debug!(closed, "idle audit trails closed");
        }
    }
}

async fn check_crd_installed(client: &Client) -> Result<(), Error> {
    let tenants: Api<HealthcareTenant> = Api::all(client.clone());
    match tenants.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::Setup(
            "the HealthcareTenant CRD is not installed: kubectl apply --server-side -f crds/healthcaretenant.yaml".into(),
        )),
        Err(e) => Err(Error::Setup(format!(
            "cannot list HealthcareTenants (check the operator's RBAC and the API server): {e}"
        ))),
    }
}

/// The controller: HealthcareTenants, and the children they own (watched by label so the
/// operator caches only its own objects).
pub async fn controller(
    ctx: Arc<Context>,
    concurrency: u16,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    // Status writes (ours) and other metadata churn do not need a reconcile: only a spec change
    // (generation), a finalizer change, or the start of a deletion do.
    let (reader, writer) = reflector::store();
    let tenants = watcher(
        Api::<HealthcareTenant>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    // The cache holds every tenant for the operator's life: without the field-manager
    // bookkeeping (never read here) a tenant takes a fraction of the memory.
    .modify(|tenant| {
        tenant.managed_fields_mut().clear();
        tenant
            .annotations_mut()
            .remove("kubectl.kubernetes.io/last-applied-configuration");
    })
    .reflect(writer)
    .applied_objects()
    .predicate_filter(spec_finalizers_or_deletion, Default::default());
    // Every child's change brings its tenant back; the same watches fill the caches that let
    // a reconcile confirm a settled tenant's children without reading them.
    let (watched, children) = Watched::start(&client, &owned, &ctx.pdb_resource);
    let pdb_resource = ctx.pdb_resource.clone();
    let mut controller = Controller::for_stream(tenants, reader)
        .owns_stream(children.config_maps)
        .owns_stream(children.stateful_sets)
        .owns_stream(children.services)
        .owns_stream(children.network_policies)
        .owns_stream_with(children.disruption_budgets, pdb_resource)
        .owns_stream(children.service_accounts)
        .owns_stream(children.roles)
        .owns_stream(children.role_bindings);
    // The relay's pods: a relay that comes up (or goes) changes the tenant's Ready.
    controller = controller.owns(
        Api::<k8s_openapi::api::apps::v1::Deployment>::all(client.clone()),
        owned.clone(),
    );
    if ctx.cert_manager {
        controller = controller.owns(Api::<Certificate>::all(client.clone()), owned);
    }
    set_watched(&ctx, Some(Arc::new(watched)));
    let stop = futures::future::FutureExt::shared(Box::pin(stop));
    let tenants = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop.clone())
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(tenant = %object.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "controller event"),
            }
        });
    // Emergency access is looked after by the same leader.
    futures::future::join(tenants, crate::break_glass::controller(ctx.clone(), stop)).await;
    // Nothing fills these caches any more: a next leadership starts its own.
    set_watched(&ctx, None);
}

fn set_watched(ctx: &Context, watched: Option<Arc<Watched>>) {
    if let Ok(mut slot) = ctx.watched.write() {
        *slot = watched;
    }
}

fn spec_finalizers_or_deletion(tenant: &HealthcareTenant) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = &tenant.metadata;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut hasher);
    Some(hasher.finish())
}

async fn serve_http(
    addr: SocketAddr,
    ctx: Arc<Context>,
    leading: Arc<AtomicBool>,
) -> Result<(), Error> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let metrics_ctx = ctx.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let ctx = metrics_ctx.clone();
                async move { ctx.metrics.render() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        // Ready when this replica leads; a standby is alive but not serving.
        .route(
            "/readyz",
            get(move || {
                let leading = leading.clone();
                async move {
                    if leading.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ok")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "standby: another replica leads",
                        )
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Setup(format!("cannot listen on {addr} for /metrics: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(())
}
