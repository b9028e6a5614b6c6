//! The tenant's TURN relay: its NetworkPolicy, config, Service and pods, forwarding only to
//! the media pods' load balancer addresses as they are now (its shared secret is created once
//! with the tenant's keys, `children::ensure_keys`). A tenant without `spec.relay` costs
//! nothing here, unless its spec just changed: then a relay it had is removed (its Secret stays
//! until the tenant goes; it protects nothing once no relay runs).

use bedside_crds::HealthcareTenant;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::status::{Observed, RelayState};
use super::{Context, Error, kube_err, server_side_apply};
use crate::build::{self, relay};
use crate::names::{ChildNames, SERVICE_ROLE_LABEL, TENANT_LABEL};

pub(super) async fn apply(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    spec_changed: bool,
    observed: &mut Observed,
) -> Result<(), Error> {
    let names = ChildNames::of(tenant);
    if tenant.spec.relay.is_none() {
        if spec_changed {
            remove(&ctx.client, namespace, &names).await?;
        }
        return Ok(());
    }
    let peers = media_peers(ctx, tenant, namespace, observed.media_replicas).await?;
    let Some(objects) = relay::relay_objects(tenant, &peers)? else {
        return Ok(());
    };
    let client = &ctx.client;
    // The policy first: no relay pod runs unconfined.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    server_side_apply(&policies, &objects.network_policy, "NetworkPolicy").await?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    server_side_apply(&configmaps, &objects.config_map, "ConfigMap").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = server_side_apply(&services, &objects.service, "Service").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = server_side_apply(&deployments, &objects.deployment, "Deployment").await?;
    observed.relay = Some(RelayState {
        address: build::load_balancer_address(&service),
        ready_pods: deployment
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
    });
    Ok(())
}

/// The media pods' addresses as their Services show them now.
async fn media_peers(
    ctx: &Context,
    tenant: &HealthcareTenant,
    namespace: &str,
    replicas: i32,
) -> Result<Vec<std::net::IpAddr>, Error> {
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!(
        "{TENANT_LABEL}={},{SERVICE_ROLE_LABEL}=media",
        tenant.name_any()
    );
    let media = services
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err("listing the media Services"))?
        .items;
    let addresses = build::media_addresses(tenant, replicas, &media);
    Ok(relay::relay_peers(&addresses.by_pod))
}

/// The relay of a tenant whose spec no longer asks for one.
async fn remove(client: &Client, namespace: &str, names: &ChildNames) -> Result<(), Error> {
    delete::<Deployment>(client, namespace, &names.relay).await?;
    delete::<Service>(client, namespace, &names.relay).await?;
    delete::<ConfigMap>(client, namespace, &names.relay_config).await?;
    delete::<NetworkPolicy>(client, namespace, &names.relay).await
}

async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(namespace, object = %name, kind = %K::kind(&Default::default()), "removed the relay of a tenant that no longer asks for one");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("removing the relay's {name}"),
            source,
        }),
    }
}
