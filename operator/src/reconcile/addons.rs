//! What a tenant gets from APIs a cluster may not serve (discovered at start-up): cert-manager's
//! Certificate for its signaling endpoint, prometheus-operator's ServiceMonitor.

use bedside_crds::HealthcareTenant;
use kube::api::{Api, DynamicObject};

use super::status::{CertificateState, Observed};
use super::{Context, Error, server_side_apply};
use crate::build;
use crate::names::ChildNames;
use crate::thirdparty::certmanager::Certificate;

pub(super) async fn apply(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    observed: &mut Observed,
) -> Result<(), Error> {
    let client = &ctx.client;
    if ctx.cert_manager
        && let Some(certificate) = build::certificate(tenant)?
    {
        let certificates: Api<Certificate> = Api::namespaced(client.clone(), namespace);
        let applied = server_side_apply(&certificates, &certificate, "Certificate").await?;
        let ready = applied
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        observed.certificate = CertificateState::Certificate {
            name: ChildNames::of(tenant).certificate_secret,
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
            Api::namespaced_with(client.clone(), namespace, resource);
        server_side_apply(
            &monitors,
            &build::service_monitor(tenant, resource)?,
            "ServiceMonitor",
        )
        .await?;
    }
    Ok(())
}
