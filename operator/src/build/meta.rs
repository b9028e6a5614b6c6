//! What every built object shares: its metadata (labels, the tenant as controlling owner) and
//! the check of the JSON into its k8s-openapi type. A leaf, so each builder uses it and none
//! uses another.

use bedside_crds::HealthcareTenant;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::BuildError;
use crate::names::labels;

pub(super) fn typed<T: DeserializeOwned>(
    kind: &'static str,
    value: Value,
) -> Result<T, BuildError> {
    serde_json::from_value(value).map_err(|source| BuildError::Invalid { kind, source })
}

pub(crate) fn metadata(tenant: &HealthcareTenant, name: &str) -> Result<Value, BuildError> {
    let namespace = tenant.namespace().ok_or(BuildError::NoNamespace)?;
    Ok(json!({
        "name": name,
        "namespace": namespace,
        "labels": labels(tenant),
        "ownerReferences": tenant.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
    }))
}

/// An Opaque Secret of the tenant holding one `key`.
pub(super) fn one_key_secret(
    tenant: &HealthcareTenant,
    name: &str,
    key: &str,
    value: Vec<u8>,
) -> Result<k8s_openapi::api::core::v1::Secret, BuildError> {
    let mut secret: k8s_openapi::api::core::v1::Secret = typed(
        "Secret",
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": metadata(tenant, name)?,
        }),
    )?;
    secret.data = Some(std::collections::BTreeMap::from([(
        key.to_string(),
        k8s_openapi::ByteString(value),
    )]));
    Ok(secret)
}

/// A ConfigMap holding one file, under `metadata`.
pub(super) fn one_file_config_map(
    metadata: Value,
    file: &str,
    text: String,
) -> Result<k8s_openapi::api::core::v1::ConfigMap, BuildError> {
    typed(
        "ConfigMap",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {file: text}}),
    )
}

/// Pod Security `restricted`, for the pod: non-root as the images' user 65532, seccomp.
pub(super) fn restricted_pod_security() -> Value {
    json!({
        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// Pod Security `restricted`, for a container: no privilege, a read-only root, no capability.
pub(super) fn restricted_container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "privileged": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// A container's `resources` from the tenant's CPU and memory (empty when it names none).
pub(super) fn container_resources(
    resources: Option<&bedside_crds::tenant::ComputeResources>,
) -> Value {
    resources
        .map(|r| json!({"requests": r.requests, "limits": r.limits}))
        .unwrap_or_else(|| json!({}))
}

/// The Secret holding the tenant's certificate: its own, or the one cert-manager issues.
pub(crate) fn tls_secret_name(tenant: &HealthcareTenant) -> String {
    tenant
        .spec
        .tls
        .secret_name
        .clone()
        .unwrap_or_else(|| crate::names::ChildNames::of(tenant).certificate_secret)
}
