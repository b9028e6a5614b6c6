//! The media pods' ServiceAccount, Role and RoleBinding (placement Leases): read for the
//! "unchanged since our apply" check, applied before the StatefulSet whose pods use them.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Api, Client, ResourceExt};

use super::{Error, kube_err, server_side_apply};
use crate::build::MediaAccess;

struct Apis {
    accounts: Api<ServiceAccount>,
    roles: Api<Role>,
    bindings: Api<RoleBinding>,
}

fn apis(client: &Client, namespace: &str) -> Apis {
    Apis {
        accounts: Api::namespaced(client.clone(), namespace),
        roles: Api::namespaced(client.clone(), namespace),
        bindings: Api::namespaced(client.clone(), namespace),
    }
}

/// The live resourceVersions, in the order [`apply`] returns them.
pub(super) async fn live_versions(
    client: &Client,
    namespace: &str,
    access: &MediaAccess,
) -> Result<Vec<Option<String>>, Error> {
    let apis = apis(client, namespace);
    Ok(vec![
        apis.accounts
            .get_opt(&access.service_account.name_any())
            .await
            .map_err(kube_err("reading the media ServiceAccount"))?
            .and_then(|o| o.resource_version()),
        apis.roles
            .get_opt(&access.role.name_any())
            .await
            .map_err(kube_err("reading the media placement Role"))?
            .and_then(|o| o.resource_version()),
        apis.bindings
            .get_opt(&access.role_binding.name_any())
            .await
            .map_err(kube_err("reading the media placement RoleBinding"))?
            .and_then(|o| o.resource_version()),
    ])
}

pub(super) async fn apply(
    client: &Client,
    namespace: &str,
    access: &MediaAccess,
) -> Result<Vec<Option<String>>, Error> {
    let apis = apis(client, namespace);
    Ok(vec![
        server_side_apply(&apis.accounts, &access.service_account, "ServiceAccount")
            .await?
            .resource_version(),
        server_side_apply(&apis.roles, &access.role, "Role")
            .await?
            .resource_version(),
        server_side_apply(&apis.bindings, &access.role_binding, "RoleBinding")
            .await?
            .resource_version(),
    ])
}
