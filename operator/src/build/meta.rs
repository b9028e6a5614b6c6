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

pub(super) fn metadata(tenant: &HealthcareTenant, name: &str) -> Result<Value, BuildError> {
    let namespace = tenant.namespace().ok_or(BuildError::NoNamespace)?;
    Ok(json!({
        "name": name,
        "namespace": namespace,
        "labels": labels(tenant),
        "ownerReferences": tenant.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
    }))
}
