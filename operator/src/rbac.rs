//! The operator's access, least privilege, in one place that the tests bind to the operator's
//! ServiceAccount and `bedside-operator rbac` prints for the chart. Three parts:
//!
//! - [`cluster_role`], bound cluster-wide: HealthcareTenants, reading (list/watch, never
//!   Secrets) the kinds it owns so that its watches see their changes, and Events;
//! - [`tenant_role`], bound in each namespace that holds tenants (a RoleBinding per namespace,
//!   or one ClusterRoleBinding for all): everything that writes. A compromised operator
//!   writes nowhere else: not in kube-system, not in another team's namespace;
//! - [`leader_role`], in the operator's own namespace: its leader-election Lease.

use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use serde_json::{Value, json};

pub const CLUSTER_ROLE: &str = "bedside-operator";
pub const TENANT_ROLE: &str = "bedside-operator-tenant";
pub const LEADER_ROLE: &str = "bedside-operator-leader";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn labels() -> Value {
    json!({"app.kubernetes.io/part-of": "bedside"})
}

pub fn cluster_role() -> ClusterRole {
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": CLUSTER_ROLE, "labels": labels()},
        "rules": [
            rule(&["bedside.health"], &["healthcaretenants"], &["get", "list", "watch", "patch", "update"]),
            rule(&["bedside.health"], &["healthcaretenants/status"], &["get", "patch", "update"]),
            // blockOwnerDeletion on children needs update on the owner's finalizers.
            rule(&["bedside.health"], &["healthcaretenants/finalizers"], &["update"]),
            // Emergency access: the BreakGlass objects people write, their status ours.
            rule(&["bedside.health"], &["breakglasses"], &["get", "list", "watch"]),
            rule(&["bedside.health"], &["breakglasses/status"], &["get", "patch", "update"]),
            // The watches that bring a tenant back when a child changes: read only.
            rule(&["", "apps", "networking.k8s.io", "cert-manager.io", "policy", "rbac.authorization.k8s.io"],
                 &["configmaps", "services", "statefulsets", "deployments", "networkpolicies", "certificates",
                   "poddisruptionbudgets", "serviceaccounts", "roles", "rolebindings"],
                 &["list", "watch"]),
            // Why a tenant is not provisioned, in `kubectl describe hct`, wherever it is.
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        ],
    }))
    .expect("a valid ClusterRole")
}

pub fn tenant_role() -> ClusterRole {
    let owned = ["get", "create", "patch"];
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": TENANT_ROLE, "labels": labels()},
        "rules": [
            // delete: a TURN relay's config, when the tenant no longer asks for a relay.
            rule(&[""], &["configmaps"], &["get", "create", "patch", "delete"]),
            // delete: the media Service of a pod removed by a scale-down, and nothing else.
            rule(&[""], &["services"], &["get", "create", "patch", "delete"]),
            // The media-node pods' addresses, to ask them about their audit sinks.
            rule(&[""], &["pods"], &["list"]),
            // Pods that predate the tenant's audit volume claims are moved onto them by
            // eviction, which the PodDisruptionBudget paces; never deleted outright.
            rule(&[""], &["pods/eviction"], &["create"]),
            // Secrets: no list/watch; the tenant's TLS and sink Secrets are read by name and
            // the key Secret is created once.
            rule(&[""], &["secrets"], &["get", "create"]),
            // delete: only to replace the media StatefulSet, its pods kept (orphaned), when its
            // audit volume claims change, which the API server refuses in place.
            rule(&["apps"], &["statefulsets"], &["get", "create", "patch", "delete"]),
            // The media nodes' audit volume claims, asked for more space when buffers grow.
            rule(&[""], &["persistentvolumeclaims"], &["list", "patch"]),
            // The tenant's TURN relay; and the media nodes' Deployment an older operator made,
            // read and removed once.
            rule(&["apps"], &["deployments"], &["get", "create", "patch", "delete"]),
            // delete: a TURN relay's policy, when the tenant no longer asks for a relay.
            rule(&["networking.k8s.io"], &["networkpolicies"], &["get", "create", "patch", "delete"]),
            rule(&["policy"], &["poddisruptionbudgets"], &owned),
            rule(&["cert-manager.io"], &["certificates"], &owned),
            rule(&["monitoring.coreos.com"], &["servicemonitors"], &owned),
            // The tenants' compliance evidence, where openreports.io is served.
            rule(&["openreports.io"], &["reports"], &owned),
            // It may grant the media pods' placement Role only what it holds itself (RBAC's
            // escalation check).
            rule(&["coordination.k8s.io"], &["leases"], &crate::build::access::LEASE_VERBS),
            // The media pods' ServiceAccount, Role and RoleBinding (placement Leases).
            rule(&[""], &["serviceaccounts"], &owned),
            rule(&["rbac.authorization.k8s.io"], &["roles", "rolebindings"], &owned),
        ],
    }))
    .expect("a valid ClusterRole")
}

/// The leader-election Lease, in `namespace` (the operator's own).
pub fn leader_role(namespace: &str) -> Role {
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": LEADER_ROLE, "namespace": namespace, "labels": labels()},
        "rules": [rule(&["coordination.k8s.io"], &["leases"], &["get", "create", "update", "patch"])],
    }))
    .expect("a valid Role")
}

/// What to run when the operator may not write in `namespace`: the message a tenant's status
/// and Events carry.
pub fn grant_hint(namespace: &str, operator_namespace: Option<&str>) -> String {
    let subject = format!(
        "{}:{CLUSTER_ROLE}",
        operator_namespace.unwrap_or("<operator namespace>")
    );
    format!(
        "bedside-operator may not write in namespace {namespace}: add it to the chart's \
         tenantNamespaces, or run `kubectl create rolebinding {CLUSTER_ROLE} -n {namespace} \
         --clusterrole={TENANT_ROLE} --serviceaccount={subject}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::PolicyRule;

    fn verbs_on(rules: &[PolicyRule], resource: &str) -> Vec<String> {
        let mut verbs: Vec<String> = rules
            .iter()
            .filter(|r| {
                r.resources
                    .iter()
                    .flatten()
                    .any(|res| res == resource || res == "*")
            })
            .flat_map(|r| r.verbs.clone())
            .collect();
        verbs.sort();
        verbs.dedup();
        verbs
    }

    #[test]
    fn cluster_wide_the_operator_writes_only_tenants_break_glass_status_and_events() {
        let rules = cluster_role().rules.unwrap_or_default();
        for rule in &rules {
            let resources = rule.resources.clone().unwrap_or_default();
            let writes = rule
                .verbs
                .iter()
                .any(|v| !matches!(v.as_str(), "get" | "list" | "watch"));
            assert!(
                !writes
                    || resources.iter().all(|r| r.starts_with("healthcaretenants")
                        || r == "breakglasses/status"
                        || r == "events"),
                "a cluster-wide write: {rule:?}"
            );
            assert!(
                !rule.verbs.contains(&"*".to_string()),
                "no rule grants every verb"
            );
        }
        assert!(
            verbs_on(&rules, "secrets").is_empty(),
            "no Secret anywhere but where a tenant lives"
        );
    }

    #[test]
    fn in_a_tenants_namespace_secrets_are_read_by_name_and_little_is_deleted() {
        let rules = tenant_role().rules.unwrap_or_default();
        assert_eq!(verbs_on(&rules, "secrets"), ["create", "get"]);
        let deletes: Vec<_> = rules
            .iter()
            .filter(|r| r.verbs.contains(&"delete".to_string()))
            .flat_map(|r| r.resources.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            deletes,
            [
                "configmaps",
                "services",
                "statefulsets",
                "deployments",
                "networkpolicies",
                "leases"
            ],
            "only removed pods' media Services, the media StatefulSet (replaced with its pods \
             kept when its claims change), an older operator's Deployment, a relay the tenant \
             no longer asks for (its Deployment, Service, ConfigMap and NetworkPolicy) and (to \
             grant it to media pods) placement Leases are deleted; never a Secret"
        );
    }
}
