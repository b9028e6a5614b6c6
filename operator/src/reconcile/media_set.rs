//! The media StatefulSet: applied; replaced (its pods kept) when its claim templates must
//! change, which the API server refuses in place, and its pods moved onto their claims; and the
//! Deployment of an older operator removed.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{Error, kube_err, server_side_apply};
use crate::build::storage;
use bedside_crds::HealthcareTenant;

/// How long a replaced StatefulSet may take to go (the garbage collector orphans its pods first).
const REPLACE_WAIT: Duration = Duration::from_secs(30);

/// Applies the media StatefulSet. When its claim templates change (audit storage turned on or
/// off, its class or size changed) the StatefulSet is deleted with its pods orphaned and made
/// again: it adopts the running pods and rolls them one at a time onto the new volumes, each
/// draining first, so the switch ends no call.
pub(super) async fn apply(
    client: &Client,
    tenant: &HealthcareTenant,
    live: Option<&StatefulSet>,
    desired: &StatefulSet,
) -> Result<StatefulSet, Error> {
    let namespace = desired.namespace().unwrap_or_default();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    if let Some(live) = live.filter(|live| storage::claims_differ(live, desired)) {
        replace_keeping_pods(&sets, live).await?;
        grow_claims(client, tenant, desired).await;
    } else if let Some(live) = live.filter(|live| super::drift::template_tampered(live, desired)) {
        replace_template(&sets, live, desired).await?;
    }
    server_side_apply(&sets, desired, "StatefulSet").await
}

/// Puts the operator's pod template back whole: a merge patch that turns the live template
/// into the desired one, every field the operator does not set (host namespaces, host paths,
/// containers another manager added) removed; the API server defaults what it defaults again,
/// and the pods roll. Carries the live resourceVersion: an edit in between fails it, and the
/// next reconcile looks again.
async fn replace_template(
    sets: &Api<StatefulSet>,
    live: &StatefulSet,
    desired: &StatefulSet,
) -> Result<(), Error> {
    let name = live.name_any();
    let template = |set: &StatefulSet| {
        serde_json::to_value(set.spec.as_ref().map(|s| &s.template)).unwrap_or_default()
    };
    let patch = json!({
        "metadata": {"resourceVersion": live.resource_version()},
        "spec": {"template": merge_patch(&template(live), &template(desired))},
    });
    sets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err(format!(
            "replacing the tampered pod template of StatefulSet {name}"
        )))?;
    tracing::warn!(statefulset = %name, "replaced a pod template another manager had added to");
    Ok(())
}

/// The JSON merge patch (RFC 7386) that turns `live` into `desired`: keys only `live` has are
/// set to null, objects are patched key by key, anything else (arrays included) is replaced.
fn merge_patch(live: &serde_json::Value, desired: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            let mut patch = serde_json::Map::new();
            for key in live.keys().filter(|k| !desired.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, value) in desired {
                let entry = match live.get(key) {
                    Some(old) => merge_patch(old, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), entry);
            }
            Value::Object(patch)
        }
        (_, desired) => desired.clone(),
    }
}

/// Moves the pods that run without their audit claim (they predate `spec.audit.storage`) onto
/// it. A pod's volumes cannot change, and the StatefulSet controller stops at the first pod
/// whose storage does not match (it tries, and fails, to update it in place), so the operator
/// evicts them itself: the lowest ordinal first (the controller recreates missing pods in
/// order, up to the first mismatching one), one at a time (the PodDisruptionBudget refuses an
/// eviction while another pod is unavailable). Each evicted pod drains its calls first. True
/// while pods remain to move.
pub(super) async fn move_pods_onto_claims(
    client: &Client,
    tenant: &HealthcareTenant,
    desired: &StatefulSet,
) -> Result<bool, Error> {
    let Some(claim) = storage::claim_volume_name(desired) else {
        return Ok(false);
    };
    let namespace = desired.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let listed = pods
        .list(&ListParams::default().labels(&selector(tenant)))
        .await
        .map_err(kube_err("listing the media pods"))?;
    let Some(next) = storage::next_pod_to_move(&listed.items, &claim) else {
        return Ok(false);
    };
    if listed
        .items
        .iter()
        .any(|p| p.metadata.deletion_timestamp.is_some())
    {
        return Ok(true);
    }
    match pods.evict(&next, &EvictParams::default()).await {
        Ok(_) => {
            tracing::info!(pod = %next, "evicted a media pod to move it onto its audit volume claim");
            Ok(true)
        }
        // 429: the disruption budget allows none now (a pod is not Ready); 404: gone already.
        Err(kube::Error::Api(status)) if status.code == 429 || status.code == 404 => Ok(true),
        Err(source) => Err(Error::Kube {
            action: format!("evicting pod {next} to move it onto its audit volume claim"),
            source,
        }),
    }
}

fn selector(tenant: &HealthcareTenant) -> String {
    crate::names::selector_labels(tenant)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn replace_keeping_pods(sets: &Api<StatefulSet>, live: &StatefulSet) -> Result<(), Error> {
    let name = live.name_any();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        preconditions: Some(Preconditions {
            uid: live.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match sets.delete(&name, &params).await {
        Ok(_) => {}
        // Gone already, or replaced by another reconcile: nothing of ours to delete.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(source) => {
            return Err(Error::Kube {
                action: format!("replacing StatefulSet {name} for its new audit volume claims"),
                source,
            });
        }
    }
    tracing::info!(statefulset = %name, "replacing the media StatefulSet (pods kept) for its new audit volume claims");
    let started = std::time::Instant::now();
    while started.elapsed() < REPLACE_WAIT {
        let current = sets
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading StatefulSet {name}")))?;
        if current.is_none_or(|s| s.uid() != live.uid()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(Error::Kube {
        action: format!("waiting for StatefulSet {name} to be replaced"),
        source: kube::Error::Service(
            format!(
                "still there after {} s: is the garbage collector (kube-controller-manager) running?",
                REPLACE_WAIT.as_secs()
            )
            .into(),
        ),
    })
}

/// Claims made before a change of buffer sizes keep their size (a StatefulSet never resizes
/// them): each is asked for the new size. A class that cannot expand refuses; the node then
/// refuses joins when its volume is full rather than lose records, and the warning says why.
async fn grow_claims(client: &Client, tenant: &HealthcareTenant, desired: &StatefulSet) {
    let Some(size) = storage::desired_claim_size(desired) else {
        return;
    };
    let namespace = desired.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let listed = match claims
        .list(&ListParams::default().labels(&selector(tenant)))
        .await
    {
        Ok(listed) => listed,
        Err(error) => {
            tracing::warn!(%error, "could not list the media nodes' audit volume claims to resize them");
            return;
        }
    };
    for claim in listed {
        let requested = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.as_str());
        if requested == Some(size.as_str()) {
            continue;
        }
        let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
        if let Err(error) = claims
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(claim = %claim.name_any(), %size, %error,
                "the audit volume claim keeps its size: its StorageClass must allow volume expansion (allowVolumeExpansion), or delete the claim once its pod's buffers are delivered");
        }
    }
}

/// Media nodes were a Deployment of the same name before they were a StatefulSet: after an
/// operator upgrade its pods would linger (and sit behind the signaling Service), so the old
/// Deployment goes, if this tenant controls it.
pub(super) async fn remove_legacy_deployment(
    client: &Client,
    namespace: &str,
    tenant: &HealthcareTenant,
    name: &str,
) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(old) = deployments.get_opt(name).await.map_err(kube_err(format!(
        "reading the legacy media Deployment {name}"
    )))?
    else {
        return Ok(());
    };
    let ours = old
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == tenant.uid().as_ref());
    if !ours {
        return Ok(());
    }
    match deployments.delete(name, &Default::default()).await {
        Ok(_) => {
            tracing::info!(deployment = %name, "deleted the media Deployment of an older operator");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("deleting the legacy media Deployment {name}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_patch_removes_what_only_the_live_object_has_and_replaces_lists() {
        let live = json!({"spec": {"hostNetwork": true, "dnsPolicy": "ClusterFirst",
            "containers": [{"name": "media-node"}, {"name": "sidecar"}]}});
        let desired = json!({"spec": {"containers": [{"name": "media-node"}]}});
        assert_eq!(
            merge_patch(&live, &desired),
            json!({"spec": {"hostNetwork": null, "dnsPolicy": null,
                "containers": [{"name": "media-node"}]}})
        );
    }
}
