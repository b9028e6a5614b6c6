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
    let Some(objects) = relay::relay_objects(tenant, &peers, observed.baa.is_active())? else {
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
        ready_pods: current_ready_pods(&deployment),
    });
    Ok(())
}

/// Ready relay pods that run the Deployment's current template (its config: the media
/// addresses it lets browsers reach): none while a rollout is under way, when a ready pod may
/// still be one with the old config, refusing the media pod a browser is sent to.
fn current_ready_pods(deployment: &Deployment) -> i32 {
    let Some(status) = &deployment.status else {
        return 0;
    };
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let seen = status.observed_generation >= deployment.metadata.generation;
    let rolled_out = seen && updated >= wanted && status.replicas.unwrap_or(0) == updated;
    if rolled_out {
        status.ready_replicas.unwrap_or(0).min(updated)
    } else {
        0
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(
        generation: i64,
        observed: i64,
        replicas: i32,
        updated: i32,
        ready: i32,
    ) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "relay", "generation": generation},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "replicas": replicas,
                       "updatedReplicas": updated, "readyReplicas": ready},
        }))
        .expect("a Deployment")
    }

    #[test]
    fn a_relay_counts_as_ready_only_once_its_current_config_runs() {
        // Rolled out: the one pod runs the current template.
        assert_eq!(current_ready_pods(&deployment(3, 3, 1, 1, 1)), 1);
        // A new config (a media pod's new address): the old pod is still ready, the new one
        // is not yet; browsers sent to the relay now would be refused the new address.
        assert_eq!(current_ready_pods(&deployment(4, 4, 2, 1, 1)), 0);
        // The controller has not seen the new template yet.
        assert_eq!(current_ready_pods(&deployment(5, 4, 1, 1, 1)), 0);
        // The new pod is up, the old one gone, but not ready yet.
        assert_eq!(current_ready_pods(&deployment(4, 4, 1, 1, 0)), 0);
    }
}
