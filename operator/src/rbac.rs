//! The operator's ClusterRole: least privilege, in one place that the tests bind to the
//! operator's ServiceAccount and `bedside-operator rbac` prints for the chart.

use k8s_openapi::api::rbac::v1::ClusterRole;
use serde_json::json;

pub const CLUSTER_ROLE: &str = "bedside-operator";

pub fn cluster_role() -> ClusterRole {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
    let owned = ["get", "list", "watch", "create", "patch"];
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": CLUSTER_ROLE, "labels": {"app.kubernetes.io/part-of": "bedside"}},
        "rules": [
            rule(&["bedside.health"], &["healthcaretenants"], &["get", "list", "watch", "patch", "update"]),
            rule(&["bedside.health"], &["healthcaretenants/status"], &["get", "patch", "update"]),
            // blockOwnerDeletion on children needs update on the owner's finalizers.
            rule(&["bedside.health"], &["healthcaretenants/finalizers"], &["update"]),
            rule(&[""], &["configmaps"], &owned),
            // delete: the media Service of a pod removed by a scale-down, and nothing else.
            rule(&[""], &["services"], &["get", "list", "watch", "create", "patch", "delete"]),
            // The media-node pods' addresses, to ask them about their audit sinks.
            rule(&[""], &["pods"], &["list"]),
            // Pods that predate the tenant's audit volume claims are moved onto them by
            // eviction, which the PodDisruptionBudget paces; never deleted outright.
            rule(&[""], &["pods/eviction"], &["create"]),
            // Secrets: no list/watch, so the operator cannot read every Secret in the cluster;
            // it reads the tenant's TLS Secret by name and creates the key Secret once.
            rule(&[""], &["secrets"], &["get", "create"]),
            // delete: only to replace the media StatefulSet, its pods kept (orphaned), when its
            // audit volume claims change, which the API server refuses in place.
            rule(&["apps"], &["statefulsets"], &["get", "list", "watch", "create", "patch", "delete"]),
            // The media nodes' audit volume claims, asked for more space when buffers grow.
            rule(&[""], &["persistentvolumeclaims"], &["list", "patch"]),
            // The media nodes' Deployment an older operator made: read and removed once.
            rule(&["apps"], &["deployments"], &["get", "delete"]),
            rule(&["networking.k8s.io"], &["networkpolicies"], &owned),
            rule(&["policy"], &["poddisruptionbudgets"], &owned),
            rule(&["cert-manager.io"], &["certificates"], &owned),
            rule(&["monitoring.coreos.com"], &["servicemonitors"], &owned),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            // Its own leader election; and it may grant the media pods' placement Role only
            // what it holds itself (RBAC's escalation check).
            rule(&["coordination.k8s.io"], &["leases"], &crate::build::access::LEASE_VERBS),
            // The media pods' ServiceAccount, Role and RoleBinding (placement Leases).
            rule(&[""], &["serviceaccounts"], &owned),
            rule(&["rbac.authorization.k8s.io"], &["roles", "rolebindings"], &owned),
        ],
    }))
    .expect("a valid ClusterRole")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_cannot_list_or_delete_secrets() {
        let role = cluster_role();
        // Every rule that reaches Secrets (by name or by a wildcard), not only the first.
        let rules = role.rules.iter().flatten();
        let mut verbs: Vec<String> = rules
            .filter(|r| {
                r.resources
                    .iter()
                    .flatten()
                    .any(|res| res == "secrets" || res == "*")
            })
            .flat_map(|r| r.verbs.clone())
            .collect();
        verbs.sort();
        verbs.dedup();
        assert_eq!(
            verbs,
            ["create", "get"],
            "Secrets are read by name and created"
        );
        assert!(
            role.rules
                .iter()
                .flatten()
                .all(|r| !r.verbs.contains(&"*".to_string())),
            "no rule grants every verb"
        );
        let deletes: Vec<_> = role
            .rules
            .iter()
            .flatten()
            .filter(|r| r.verbs.contains(&"delete".to_string()))
            .flat_map(|r| r.resources.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            deletes,
            ["services", "statefulsets", "deployments", "leases"],
            "only removed pods' media Services, the media StatefulSet (replaced with its pods \
             kept when its claims change), an older operator's Deployment and (to grant it to \
             media pods) placement Leases are deleted"
        );
    }
}
