//! What a media pod may do in the cluster: read and write the Leases that place rooms across
//! the tenant's pods, in the tenant's namespace, and nothing else. The pods run as their own
//! ServiceAccount, bound to this Role only.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::json;

use super::BuildError;
use super::meta::{metadata, typed};
use crate::names::ChildNames;
use bedside_crds::HealthcareTenant;
use kube::ResourceExt;

/// The verbs the media node's placement uses on Leases (media-node/src/placement/leases.rs).
pub const LEASE_VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

#[derive(Debug, Clone)]
pub struct MediaAccess {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
}

pub fn media_access(
    tenant: &HealthcareTenant,
    names: &ChildNames,
) -> Result<MediaAccess, BuildError> {
    let namespace = tenant.namespace().ok_or(BuildError::NoNamespace)?;
    Ok(MediaAccess {
        service_account: typed(
            "ServiceAccount",
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": metadata(tenant, &names.media_account)?,
                // Only the media pods mount its token, and they say so themselves.
                "automountServiceAccountToken": false,
            }),
        )?,
        role: typed(
            "Role",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": metadata(tenant, &names.placement)?,
                "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": LEASE_VERBS}],
            }),
        )?,
        role_binding: typed(
            "RoleBinding",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": metadata(tenant, &names.placement)?,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.placement},
                "subjects": [{"kind": "ServiceAccount", "name": names.media_account, "namespace": namespace}],
            }),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_pods_may_touch_leases_in_their_namespace_and_nothing_else() {
        let tenant = super::super::objects::tests::tenant("mercy-clinic.yaml");
        let names = ChildNames::of(&tenant);
        let access = media_access(&tenant, &names).expect("access objects");
        let rules = access.role.rules.expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].api_groups.as_deref(),
            Some(&["coordination.k8s.io".to_string()][..])
        );
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["leases".to_string()][..])
        );
        assert_eq!(rules[0].verbs, LEASE_VERBS);
        let subject = &access.role_binding.subjects.expect("subjects")[0];
        assert_eq!(subject.name, names.media_account);
        assert_eq!(subject.namespace, tenant.namespace());
        assert_eq!(access.role_binding.role_ref.name, names.placement);
    }
}
