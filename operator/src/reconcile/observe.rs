//! What a reconcile looks at before and after it acts: the tenant's stored status, the BAA's
//! state today and the spec against the CRD's own rules; then the TLS Secret, the Ready media
//! pods and every reporter's audit sinks.

use bedside_crds::{HealthcareTenant, HealthcareTenantStatus};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::status::{self, CertificateState, Observed};
use super::{Context, Error, audit, kube_err, sinks};
use crate::audit::Happening;
use crate::baa;
use crate::build::BuildError;
use crate::names::selector_labels;

/// Where a reconcile starts from.
pub(super) struct Start {
    pub observed: Observed,
    /// The status as stored: its conditions carry over.
    pub previous: HealthcareTenantStatus,
    /// The spec changed since the status was last written.
    pub spec_changed: bool,
    /// When the BAA next changes state.
    pub next_change: Option<Timestamp>,
}

pub(super) async fn start(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    now: Timestamp,
) -> Result<Start, Error> {
    let (baa_state, next_change) = baa::state_at(&tenant.spec.baa, now);
    // The status as stored now, not as the watch cache last saw it: the reconcile before this
    // one may have written it a moment ago, and its conditions carry over. A tenant in hand at
    // the version the operator last read or wrote carries it already.
    let previous = match ctx.status_in_hand(tenant) {
        Some(status) => status,
        None => {
            let tenants: Api<HealthcareTenant> = Api::namespaced(ctx.client.clone(), namespace);
            let stored = tenants
                .get_status(&tenant.name_any())
                .await
                .map_err(kube_err("reading the tenant's status"))?;
            ctx.status_seen_at(tenant, stored.resource_version());
            stored.status.unwrap_or_default()
        }
    };
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
        not_permitted: None,
        relay: None,
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
    Ok(Start {
        observed,
        previous,
        spec_changed,
        next_change,
    })
}

/// The TLS Secret the tenant names, and what every media node
/// (and the operator's own delivery) reports of the tenant's audit sinks.
pub(super) async fn health(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    observed: &mut Observed,
) -> Result<(), Error> {
    if let Some(name) = &tenant.spec.tls.secret_name {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        let exists = secrets
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading the TLS Secret {name}")))?
            .is_some();
        observed.certificate = CertificateState::TenantSecret {
            name: name.clone(),
            exists,
        };
    }
    let selector: Vec<String> = selector_labels(tenant)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    observed.sinks = sinks::node_reports(&ctx.client, namespace, &selector.join(",")).await;
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
    Ok(())
}
