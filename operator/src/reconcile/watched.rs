//! The controller's watches of the tenants' children: each change brings the owning tenant back,
//! and on the way each child's resourceVersion is noted, so that a reconcile can confirm that
//! every child is still exactly as its last apply left it without one GET.
//!
//! Only (namespace, name) -> resourceVersion is kept, about a hundred bytes a child: whole
//! objects, even their metadata alone, cost the operator 16 KiB a tenant (measured at 1,000
//! tenants), too much at 10,000. A version may lag the API server: it is only ever used to
//! confirm "unchanged" (equal to the one our apply got back); anything else is read from the
//! API server.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::build::Desired;
use crate::names::ChildNames;

/// resourceVersion by name, by namespace.
type ByNamespace = HashMap<Box<str>, HashMap<Box<str>, Box<str>>>;

/// The resourceVersions of the objects one watch follows, by namespace and name.
#[derive(Debug, Default)]
pub struct Versions {
    live: ByNamespace,
    /// A relist in progress: it replaces `live` whole when done, so objects deleted while the
    /// watch was down do not linger.
    relisting: Option<ByNamespace>,
}

impl Versions {
    /// What one watch event says.
    pub fn apply<K: Resource>(&mut self, event: &Event<K>) {
        match event {
            Event::Apply(object) => insert(&mut self.live, object),
            Event::Delete(object) => {
                let namespace = object.namespace().unwrap_or_default();
                if let Some(names) = self.live.get_mut(namespace.as_str()) {
                    names.remove(object.name_any().as_str());
                    if names.is_empty() {
                        self.live.remove(namespace.as_str());
                    }
                }
            }
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let Some(relisting) = self.relisting.as_mut() {
                    insert(relisting, object);
                }
            }
            Event::InitDone => {
                if let Some(relisted) = self.relisting.take() {
                    self.live = relisted;
                }
            }
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&str> {
        self.live.get(namespace)?.get(name).map(|v| &**v)
    }
}

fn insert<K: Resource>(map: &mut ByNamespace, object: &K) {
    let Some(version) = object.resource_version() else {
        return;
    };
    let namespace = object.namespace().unwrap_or_default();
    map.entry(namespace.into_boxed_str())
        .or_default()
        .insert(object.name_any().into_boxed_str(), version.into_boxed_str());
}

type Shared = Arc<RwLock<Versions>>;

/// The children's versions, one [`Versions`] per kind.
#[derive(Debug, Default)]
pub struct Watched {
    config_maps: Shared,
    stateful_sets: Shared,
    services: Shared,
    network_policies: Shared,
    disruption_budgets: Shared,
    service_accounts: Shared,
    roles: Shared,
    role_bindings: Shared,
}

/// The watch streams that fill [`Watched`]: the controller turns each into reconciles of the
/// owning tenant.
pub struct Triggers {
    pub config_maps: MetaStream<ConfigMap>,
    pub stateful_sets: MetaStream<StatefulSet>,
    pub services: MetaStream<Service>,
    pub network_policies: MetaStream<NetworkPolicy>,
    pub disruption_budgets: MetaStream<DynamicObject>,
    pub service_accounts: MetaStream<ServiceAccount>,
    pub roles: MetaStream<Role>,
    pub role_bindings: MetaStream<RoleBinding>,
}

impl Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers").finish_non_exhaustive()
    }
}

pub type MetaStream<K> =
    std::pin::Pin<Box<dyn Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send>>;

impl Watched {
    /// The versions and the streams that fill them, for the objects `config` selects (the
    /// operator's own, by label) in every namespace.
    pub fn start(
        client: &Client,
        config: &watcher::Config,
        pdb_resource: &ApiResource,
    ) -> (Self, Triggers) {
        let watched = Watched::default();
        let triggers = Triggers {
            config_maps: follow(Api::all(client.clone()), config, &watched.config_maps),
            stateful_sets: follow(Api::all(client.clone()), config, &watched.stateful_sets),
            services: follow(Api::all(client.clone()), config, &watched.services),
            network_policies: follow(Api::all(client.clone()), config, &watched.network_policies),
            disruption_budgets: follow(
                Api::all_with(client.clone(), pdb_resource),
                config,
                &watched.disruption_budgets,
            ),
            service_accounts: follow(Api::all(client.clone()), config, &watched.service_accounts),
            roles: follow(Api::all(client.clone()), config, &watched.roles),
            role_bindings: follow(Api::all(client.clone()), config, &watched.role_bindings),
        };
        (watched, triggers)
    }

    /// The noted resourceVersions of a tenant's children, in the order the children's apply
    /// returns its own (`children::apply`): config ConfigMap, StatefulSet, addresses ConfigMap,
    /// each Service, NetworkPolicy, PodDisruptionBudget, ServiceAccount, Role, RoleBinding.
    pub fn versions(
        &self,
        namespace: &str,
        names: &ChildNames,
        desired: &Desired,
    ) -> Vec<Option<String>> {
        let of = |versions: &Shared, name: &str| -> Option<String> {
            let versions = versions.read().ok()?;
            versions.get(namespace, name).map(str::to_string)
        };
        let access = &desired.access;
        let mut all = vec![
            of(&self.config_maps, &names.config),
            of(&self.stateful_sets, &names.media_nodes),
            of(&self.config_maps, &names.addresses),
        ];
        all.extend(
            desired
                .services
                .iter()
                .map(|s| of(&self.services, &s.name_any())),
        );
        all.extend([
            of(&self.network_policies, &names.network_policy),
            of(&self.disruption_budgets, &names.disruption_budget),
            of(&self.service_accounts, &access.service_account.name_any()),
            of(&self.roles, &access.role.name_any()),
            of(&self.role_bindings, &access.role_binding.name_any()),
        ]);
        all
    }
}

/// A metadata-only watch whose events note versions in `versions` on their way to the
/// controller.
fn follow<K>(
    api: Api<PartialObjectMeta<K>>,
    config: &watcher::Config,
    versions: &Shared,
) -> MetaStream<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Send + Sync + Debug,
{
    let versions = versions.clone();
    watch_stream(api, config.clone())
        .default_backoff()
        .inspect_ok(move |event| {
            if let Ok(mut versions) = versions.write() {
                versions.apply(event);
            }
        })
        .touched_objects()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn map(namespace: &str, name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn versions_follow_changes_and_a_relist_forgets_what_was_deleted_meanwhile() {
        let mut versions = Versions::default();
        versions.apply(&Event::Apply(map("clinic", "a", "1")));
        versions.apply(&Event::Apply(map("clinic", "b", "2")));
        versions.apply(&Event::Apply(map("clinic", "a", "3")));
        assert_eq!(versions.get("clinic", "a"), Some("3"));
        versions.apply(&Event::Delete(map("clinic", "b", "4")));
        assert_eq!(versions.get("clinic", "b"), None);
        assert_eq!(versions.get("elsewhere", "a"), None);

        // The watch fell behind and relists: "a" was deleted meanwhile, "c" created.
        versions.apply(&Event::<ConfigMap>::Init);
        versions.apply(&Event::InitApply(map("clinic", "c", "9")));
        assert_eq!(
            versions.get("clinic", "a"),
            Some("3"),
            "until the relist is done"
        );
        versions.apply(&Event::<ConfigMap>::InitDone);
        assert_eq!(versions.get("clinic", "a"), None);
        assert_eq!(versions.get("clinic", "c"), Some("9"));
    }
}
