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
        nodes: Vec::new(),
        certificate_expiry: None,
        built: None,
        compliance: None,
        compliance_report: None,
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

/// How long a cert-manager certificate's end date is taken as read.
const CERTIFICATE_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// When the certificate in a `kubernetes.io/tls` Secret (its first, in `tls.crt`) ends.
pub(super) fn certificate_end(secret: &Secret) -> Result<Timestamp, String> {
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .ok_or("it has no tls.crt")?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem.0)
        .map_err(|e| format!("tls.crt is not a PEM certificate: {e}"))?;
    let certificate = block
        .parse_x509()
        .map_err(|e| format!("tls.crt is not an X.509 certificate: {e}"))?;
    Timestamp::from_second(certificate.validity().not_after.timestamp())
        .map_err(|e| format!("its end date is out of range: {e}"))
}

/// The TLS Secret the tenant names, and what every media node
/// (and the operator's own delivery) reports of the tenant's audit sinks.
pub(super) async fn health(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    observed: &mut Observed,
) -> Result<(), Error> {
    let uid = tenant.uid().unwrap_or_default();
    let remembered = ctx.certificate_ends.lock().ok().and_then(|ends| {
        let (read_at, end) = ends.get(&uid)?;
        (read_at.elapsed() < CERTIFICATE_READ_EVERY).then(|| end.clone())
    });
    // The tenant's own Secret is read every time (CertificateReady says whether it exists);
    // cert-manager's, whose state the Certificate reports, only for its end date, now and then.
    let end = match (&tenant.spec.tls.secret_name, remembered) {
        (None, Some(end)) => end,
        _ => {
            let name = crate::build::tls_secret_name(tenant);
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
            let secret = secrets
                .get_opt(&name)
                .await
                .map_err(kube_err(format!("reading the TLS Secret {name}")))?;
            if tenant.spec.tls.secret_name.is_some() {
                observed.certificate = CertificateState::TenantSecret {
                    name,
                    exists: secret.is_some(),
                };
            }
            let end = secret.as_ref().map(certificate_end);
            if let Ok(mut ends) = ctx.certificate_ends.lock() {
                ends.insert(uid, (std::time::Instant::now(), end.clone()));
            }
            end
        }
    };
    observed.certificate_expiry = end;
    let selector: Vec<String> = selector_labels(tenant)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    observed.nodes = sinks::node_reports(&ctx.client, namespace, &selector.join(",")).await;
    observed.sinks = sinks::sink_reports(&observed.nodes);
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
