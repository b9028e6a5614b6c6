//! Where a media node keeps its audit buffers: in the pod (emptyDir) or, with
//! `spec.audit.storage`, on a PersistentVolumeClaim of its own that outlives the pod.
//! A StatefulSet's claim templates cannot be changed in place, so the reconciler compares them
//! ([`claims_differ`]) and replaces the StatefulSet, keeping its pods, when they differ.

use bedside_crds::tenant::{AuditDestination, BufferFullPolicy, HealthcareTenantSpec};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// The volume (and claim template) name: claims are `audit-buffer-<pod>`.
pub const AUDIT_VOLUME: &str = "audit-buffer";

/// The audit buffer volume's size: each network sink's buffer (twice it when the tenant keeps
/// serving past a full buffer), plus room for the chain's tail and offsets. Sized so the node
/// refuses joins before the volume fills (or the kubelet evicts the pod) and loses what it holds.
pub fn audit_buffer_size(spec: &HealthcareTenantSpec) -> String {
    let network_sinks = spec
        .audit
        .sinks
        .iter()
        .filter(|s| !matches!(s.destination(), Some(AuditDestination::Stdout) | None))
        .count() as u64;
    let per_sink = u64::from(spec.audit.buffer_mib)
        * match spec.audit.when_buffer_full {
            BufferFullPolicy::RefuseJoins => 1,
            BufferFullPolicy::KeepServing => 2,
        };
    // A compacted buffer may hold up to 1 MiB of delivered records besides.
    format!("{}Mi", network_sinks * (per_sink + 1) + 64)
}

/// The pod's audit volume when it lives in the pod; `None` when a claim template provides it.
pub fn pod_volume(spec: &HealthcareTenantSpec) -> Option<Value> {
    spec.audit
        .storage
        .is_none()
        .then(|| json!({"name": AUDIT_VOLUME, "emptyDir": {"sizeLimit": audit_buffer_size(spec)}}))
}

/// The StatefulSet's claim templates: one ReadWriteOnce claim per pod, or none.
pub fn claim_templates(spec: &HealthcareTenantSpec, labels: Value) -> Vec<Value> {
    let Some(storage) = &spec.audit.storage else {
        return Vec::new();
    };
    let mut claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": AUDIT_VOLUME, "labels": labels},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": audit_buffer_size(spec)}},
        },
    });
    if let Some(class) = &storage.storage_class_name {
        claim["spec"]["storageClassName"] = class.clone().into();
    }
    vec![claim]
}

/// What identifies a claim template: its name, class and requested size (the API server fills
/// in the rest, so whole templates never compare equal).
fn claim_identities(set: &StatefulSet) -> Vec<(Option<String>, Option<String>, Option<String>)> {
    set.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .map(|claim| {
            let spec = claim.spec.as_ref();
            (
                claim.metadata.name.clone(),
                spec.and_then(|s| s.storage_class_name.clone()),
                spec.and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .map(|q| q.0.clone()),
            )
        })
        .collect()
}

/// Whether the live StatefulSet's claim templates differ from the desired ones: the API server
/// refuses that change, so the StatefulSet must be replaced (its pods orphaned, then adopted).
/// A live template without a class matches a desired one without: the default class is filled in
/// by admission on the claims, not on the template.
pub fn claims_differ(live: &StatefulSet, desired: &StatefulSet) -> bool {
    claim_identities(live) != claim_identities(desired)
}

/// The claim template's name, when the StatefulSet has one.
pub fn claim_volume_name(set: &StatefulSet) -> Option<String> {
    claim_identities(set)
        .into_iter()
        .find_map(|(name, _, _)| name)
}

/// Of the StatefulSet's pods, the one to move onto its claim `<template>-<pod>` next: the
/// lowest ordinal whose `template` volume is not that claim.
pub fn next_pod_to_move(pods: &[Pod], template: &str) -> Option<String> {
    let mut unmoved: Vec<(u32, String)> = pods
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let ordinal = name.rsplit('-').next()?.parse().ok()?;
            let claim = format!("{template}-{name}");
            let on_claim = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.name == template
                        && v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| c.claim_name == claim)
                });
            (!on_claim).then_some((ordinal, name))
        })
        .collect();
    unmoved.sort();
    unmoved.into_iter().next().map(|(_, name)| name)
}

/// The size each existing claim should request after a change of buffer sizes.
pub fn desired_claim_size(desired: &StatefulSet) -> Option<String> {
    claim_identities(desired)
        .into_iter()
        .find_map(|(_, _, size)| size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{BuildInputs, desired, objects_tests_tenant};
    use bedside_crds::HealthcareTenant;
    use bedside_crds::tenant::AuditStorage;

    fn media_nodes(tenant: &HealthcareTenant) -> StatefulSet {
        let inputs = BuildInputs {
            media_allowed: true,
            operator_namespace: None,
            mixed_protocol_load_balancers: true,
        };
        desired(tenant, inputs).expect("desired").media_nodes
    }

    fn audit_volume(set: &StatefulSet) -> Option<k8s_openapi::api::core::v1::Volume> {
        let pod = set.spec.as_ref()?.template.spec.as_ref()?;
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == AUDIT_VOLUME)
            .cloned()
    }

    fn with_storage(class: Option<&str>) -> HealthcareTenant {
        let mut tenant = objects_tests_tenant("mercy-clinic.yaml");
        tenant.spec.audit.storage = Some(AuditStorage {
            storage_class_name: class.map(String::from),
        });
        tenant
    }

    #[test]
    fn without_storage_the_buffers_live_in_the_pod_sized_for_every_network_sink() {
        let tenant = objects_tests_tenant("mercy-clinic.yaml");
        let set = media_nodes(&tenant);
        let volume = audit_volume(&set).expect("an audit volume in the pod");
        let limit = volume.empty_dir.and_then(|e| e.size_limit).expect("sized");
        // Two network sinks of 256 MiB each, 1 MiB of delivered records each, 64 MiB besides.
        assert_eq!(limit.0, "578Mi");
        assert!(set.spec.expect("spec").volume_claim_templates.is_none());
    }

    #[test]
    fn with_storage_each_pod_gets_a_claim_of_that_size_mounted_where_the_buffers_are() {
        let set = media_nodes(&with_storage(Some("fast-ssd")));
        assert!(audit_volume(&set).is_none(), "no emptyDir hides the claim");
        let spec = set.spec.clone().expect("spec");
        let claims = spec.volume_claim_templates.expect("claim templates");
        assert_eq!(claims.len(), 1);
        let claim = &claims[0];
        assert_eq!(claim.metadata.name.as_deref(), Some(AUDIT_VOLUME));
        let claim_spec = claim.spec.as_ref().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast-ssd"));
        assert_eq!(
            claim_spec.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_string()][..])
        );
        let size = &claim_spec.resources.as_ref().expect("resources").requests;
        assert_eq!(size.as_ref().expect("requests")["storage"].0, "578Mi");
        let mounted = spec.template.spec.expect("pod").containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| {
                m.name == AUDIT_VOLUME && m.mount_path == crate::build::config::AUDIT_BUFFER_DIR
            });
        assert!(mounted, "the node writes its buffers onto the claim");
        assert_eq!(desired_claim_size(&set).as_deref(), Some("578Mi"));
    }

    #[test]
    fn the_default_class_is_left_to_the_cluster() {
        let set = media_nodes(&with_storage(None));
        let claims = set
            .spec
            .expect("spec")
            .volume_claim_templates
            .expect("claims");
        let spec = claims[0].spec.as_ref().expect("claim spec");
        assert_eq!(spec.storage_class_name, None);
    }

    /// What the API server hands back: the same templates with defaults and a status filled in.
    fn as_served(set: &StatefulSet) -> StatefulSet {
        let mut value = serde_json::to_value(set).expect("json");
        for claim in value["spec"]["volumeClaimTemplates"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            claim["spec"]["volumeMode"] = "Filesystem".into();
            claim["status"] = json!({"phase": "Pending"});
        }
        serde_json::from_value(value).expect("statefulset")
    }

    #[test]
    fn only_a_change_of_claim_class_size_or_presence_replaces_the_statefulset() {
        let stored = media_nodes(&with_storage(None));
        let live = as_served(&stored);
        assert!(
            !claims_differ(&live, &stored),
            "defaults filled in are no change"
        );

        let mut bigger = with_storage(None);
        bigger.spec.audit.buffer_mib = 1024;
        assert!(claims_differ(&live, &media_nodes(&bigger)));
        assert!(claims_differ(
            &live,
            &media_nodes(&with_storage(Some("fast-ssd")))
        ));
        let without = objects_tests_tenant("mercy-clinic.yaml");
        assert!(claims_differ(&live, &media_nodes(&without)));
        assert!(!claims_differ(
            &media_nodes(&without),
            &media_nodes(&without)
        ));

        let mut other_change = with_storage(None);
        other_change.spec.media_nodes.replicas = 5;
        assert!(
            !claims_differ(&live, &media_nodes(&other_change)),
            "a change the API server takes in place replaces nothing"
        );
    }

    fn pod(name: &str, audit: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [], "volumes": [audit]},
        }))
        .expect("pod")
    }

    #[test]
    fn pods_without_their_claim_move_lowest_ordinal_first() {
        let on_claim = |name: &str| {
            pod(
                name,
                json!({"name": AUDIT_VOLUME, "persistentVolumeClaim": {"claimName": format!("audit-buffer-{name}")}}),
            )
        };
        let in_pod = |name: &str| pod(name, json!({"name": AUDIT_VOLUME, "emptyDir": {}}));
        let pods = vec![
            in_pod("t-media-10"),
            on_claim("t-media-0"),
            in_pod("t-media-2"),
            on_claim("t-media-1"),
        ];
        // Ordinals compare as numbers: 2 before 10.
        assert_eq!(
            next_pod_to_move(&pods, AUDIT_VOLUME).as_deref(),
            Some("t-media-2")
        );
        // Another pod's claim is not this pod's.
        let wrong = pod(
            "t-media-3",
            json!({"name": AUDIT_VOLUME, "persistentVolumeClaim": {"claimName": "audit-buffer-t-media-0"}}),
        );
        assert_eq!(
            next_pod_to_move(&[on_claim("t-media-0"), wrong], AUDIT_VOLUME).as_deref(),
            Some("t-media-3")
        );
        assert_eq!(
            next_pod_to_move(&[on_claim("t-media-0")], AUDIT_VOLUME),
            None
        );
    }
}
