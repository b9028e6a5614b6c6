//! The BreakGlass controller: carries out what [`lifecycle`] decides. Each step is sealed into
//! the tenant's audit trail before it takes effect; while a grant is active its emergency link
//! is in a Secret `<name>-link` and a break-glass lease tells the tenant's media pods to let
//! it in; when it ends the lease goes, the pods refuse the link within a second or two and end
//! the clinician's session.

pub mod lifecycle;

use std::sync::Arc;
use std::time::Duration;

use bedside_crds::HealthcareTenant;
use bedside_crds::break_glass::{
    BreakGlass, BreakGlassLease, BreakGlassStatus, lease_name, user_id,
};
use bedside_crds::join::{self, JoinClaims, Role};
use bedside_crds::leases::TENANT_LABEL;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};

use crate::audit::BreakGlassStep;
use crate::build::config::JOIN_TOKEN_KEY;
use crate::names::{ChildNames, FIELD_MANAGER};
use crate::reconcile::{Context, Error};
use lifecycle::{Decision, Facts};

/// How often a grant is looked at without a change (its own end is looked at on time).
const RESYNC: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(5);

/// Runs the controller until `stop`; does nothing (and says so) where the CRD is not installed.
pub async fn controller(
    ctx: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api = Api::<BreakGlass>::all(ctx.client.clone());
    if let Err(e) = api.list(&kube::api::ListParams::default().limit(1)).await {
        tracing::warn!(error = %e, "BreakGlass is not served (kubectl apply --server-side -f crds/breakglass.yaml): emergency access is off");
        return;
    }
    tracing::info!("looking after BreakGlass objects (emergency access)");
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "break-glass controller event");
            }
        })
        .await;
}

fn error_policy(bg: Arc<BreakGlass>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.with_label_values(&["break-glass"]).inc();
    tracing::warn!(break_glass = %bg.name_any(), namespace = ?bg.namespace(), %error, "break-glass reconcile failed; retrying");
    Action::requeue(RETRY)
}

fn kube_error(action: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |source| Error::Kube {
        action: action.to_string(),
        source,
    }
}

async fn reconcile(bg: Arc<BreakGlass>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = bg.namespace().unwrap_or_default();
    let name = bg.name_any();
    let tenant = Api::<HealthcareTenant>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&bg.spec.tenant)
        .await
        .map_err(kube_error("reading the BreakGlass's tenant"))?;
    let status = bg.status.clone().unwrap_or_default();
    let created = bg
        .meta()
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    let decision = lifecycle::decide(&Facts {
        name: &name,
        spec: &bg.spec,
        status: &status,
        created,
        tenant_found: tenant.is_some(),
        now: Timestamp::now(),
    });
    let mut written = decision.status.clone();
    if let Some(tenant) = &tenant {
        // No step takes effect before its record is kept.
        for step in &decision.steps {
            let actor = step.actor(&bg.spec);
            let refusal = matches!(
                step,
                lifecycle::Step::Expired | lifecycle::Step::Revoked | lifecycle::Step::Refused
            )
            .then_some(decision.reason_code)
            .flatten();
            let record = BreakGlassStep {
                name: &name,
                visit: &bg.spec.visit,
                action: step.action(),
                actor: actor.as_deref(),
                refusal,
            };
            if let Err(e) = ctx
                .audit
                .record_break_glass(&ctx.client, tenant, record)
                .await
            {
                tracing::warn!(break_glass = %name, error = %e, "a break-glass step waits for its audit record");
                write_status(&ctx, &bg, &with_recorded(&status, &written)).await?;
                return Ok(Action::requeue(RETRY));
            }
            written.recorded.push(step.as_str().to_string());
        }
    }
    let active = decision.active && tenant.is_some();
    match (&tenant, active) {
        (Some(tenant), true) => grant(&ctx, &bg, tenant, &decision).await?,
        _ => withdraw(&ctx, &bg).await?,
    }
    written.link_secret = active.then(|| link_secret_name(&name));
    // The gauge first: whoever reads the status written below finds it already there.
    let gauge = [namespace.as_str(), bg.spec.tenant.as_str(), name.as_str()];
    if active {
        ctx.metrics
            .break_glass_active
            .with_label_values(&gauge)
            .set(1);
    } else {
        let _ = ctx.metrics.break_glass_active.remove_label_values(&gauge);
    }
    write_status(&ctx, &bg, &written).await?;
    let next = decision.look_again.map_or(RESYNC, |d| d.min(RESYNC));
    Ok(Action::requeue(next.max(Duration::from_millis(200))))
}

/// The status as it was, with what this pass sealed already: a pass that stops early keeps
/// the records it made.
fn with_recorded(before: &BreakGlassStatus, now: &BreakGlassStatus) -> BreakGlassStatus {
    BreakGlassStatus {
        recorded: now.recorded.clone(),
        ..before.clone()
    }
}

fn link_secret_name(name: &str) -> String {
    format!("{name}-link")
}

async fn write_status(
    ctx: &Context,
    bg: &BreakGlass,
    status: &BreakGlassStatus,
) -> Result<(), Error> {
    if bg.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api =
        Api::<BreakGlass>::namespaced(ctx.client.clone(), &bg.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &bg.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_error("writing a BreakGlass's status"))?;
    Ok(())
}

/// The emergency link in its Secret, and the lease that lets the media pods take it.
async fn grant(
    ctx: &Context,
    bg: &BreakGlass,
    tenant: &HealthcareTenant,
    decision: &Decision,
) -> Result<(), Error> {
    let namespace = bg.namespace().unwrap_or_default();
    let name = bg.name_any();
    let (Some(activated), Some(expires)) =
        (decision.status.activated_at, decision.status.expires_at)
    else {
        return Ok(());
    };
    let key = join_key(ctx, tenant, &namespace).await?;
    let clinician = user_id(&bg.spec.clinician);
    let claims = JoinClaims {
        sub: clinician.clone(),
        aud: tenant.name_any(),
        room: bg.spec.visit.clone(),
        role: Role::Host,
        exp: seconds(expires),
        nbf: Some(seconds(activated)),
        start: None,
        generation: None,
        break_glass: Some(name.clone()),
    };
    let token = join::issue(&claims, &key).map_err(|e| {
        Error::Setup(format!(
            "the emergency link for BreakGlass {name} cannot be signed: {e}"
        ))
    })?;
    let mut data = std::collections::BTreeMap::from([
        ("room".to_string(), bg.spec.visit.clone()),
        ("token".to_string(), token.clone()),
        ("expires".to_string(), expires.to_string()),
    ]);
    if let Some(endpoint) = tenant.status.as_ref().and_then(|s| s.endpoint.as_deref()) {
        let base = join::web_client_url(endpoint);
        data.insert(
            "link".into(),
            join::link(&base, &bg.spec.visit, &token, None),
        );
    }
    let owner = bg.controller_owner_ref(&()).into_iter().collect();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(link_secret_name(&name)),
            namespace: Some(namespace.clone()),
            owner_references: Some(owner),
            labels: Some([(TENANT_LABEL.to_string(), tenant.name_any())].into()),
            ..Default::default()
        },
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    // Created once (the operator may create Secrets, never change or delete them): when the
    // grant ends its token is refused on every pod, and the Secret goes with the object.
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    match secrets.create(&Default::default(), &secret).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(kube_error("writing a break-glass link Secret")(e)),
    }
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let mut lease = BreakGlassLease::new(&name, &clinician, &bg.spec.visit, expires)
        .to_lease(&tenant.name_any());
    lease.metadata.owner_references = bg.controller_owner_ref(&()).map(|o| vec![o]);
    Api::<Lease>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &lease_name(&tenant.name_any(), &name),
            &apply,
            &Patch::Apply(&lease),
        )
        .await
        .map_err(kube_error("writing a break-glass lease"))?;
    Ok(())
}

/// The lease goes: the pods refuse the link and end the clinician's session.
async fn withdraw(ctx: &Context, bg: &BreakGlass) -> Result<(), Error> {
    let namespace = bg.namespace().unwrap_or_default();
    let leases = Api::<Lease>::namespaced(ctx.client.clone(), &namespace);
    match leases
        .delete(
            &lease_name(&bg.spec.tenant, &bg.name_any()),
            &DeleteParams::default(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(kube_error("deleting a break-glass lease")(e)),
    }
}

async fn join_key(
    ctx: &Context,
    tenant: &HealthcareTenant,
    namespace: &str,
) -> Result<Vec<u8>, Error> {
    let secret = ChildNames::of(tenant).keys;
    Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get(&secret)
        .await
        .map_err(kube_error("reading the tenant's join key"))?
        .data
        .and_then(|mut d| d.remove(JOIN_TOKEN_KEY))
        .map(|k| k.0)
        .ok_or_else(|| {
            Error::Setup(format!(
                "Secret {secret} has no {JOIN_TOKEN_KEY}: the tenant is not provisioned yet"
            ))
        })
}

fn seconds(t: Timestamp) -> u64 {
    u64::try_from(t.as_second()).unwrap_or(0)
}
