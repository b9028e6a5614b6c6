//! Pure comparison of what is live with what the operator wants: *why* they differ, so the
//! reason goes into the Warning Event, the log and the SettingsLocked condition.

use bedside_crds::MediaNodeConfig;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Service};
use kube::ResourceExt;

use crate::build::Desired;
use crate::names::CONFIG_FILE;

/// One difference found, to be reverted by the apply that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// e.g. `ConfigMap mercy-clinic-media-config`.
    pub object: String,
    pub what: String,
    /// True when the edit weakened a BAA-locked setting or the pods' security (a Warning).
    pub weakens_lock: bool,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.what)
    }
}

/// What is live for a tenant, as fetched by the reconciler.
#[derive(Debug, Default)]
pub struct Live {
    pub config_map: Option<ConfigMap>,
    pub media_nodes: Option<StatefulSet>,
    pub services: Vec<Option<Service>>,
}

/// Differences between `live` and `desired`. Missing children count only once the tenant was
/// provisioned (before that they simply do not exist yet). When the tenant's spec changed since
/// the last reconcile, live children differ from the new desired state by design: only edits
/// that weaken a lock (which no spec can ask for) are drift then.
pub fn find(live: &Live, desired: &Desired, provisioned: bool, spec_changed: bool) -> Vec<Drift> {
    let mut found = find_all(live, desired, provisioned);
    if spec_changed {
        found.retain(|d| d.weakens_lock);
    }
    found
}

fn find_all(live: &Live, desired: &Desired, provisioned: bool) -> Vec<Drift> {
    let mut found = Vec::new();
    let mut missing = |object: String| {
        if provisioned {
            found.push(Drift {
                object,
                what: "was deleted; recreated".into(),
                weakens_lock: true,
            });
        }
    };
    let cm_name = format!("ConfigMap {}", desired.config_map.name_any());
    let mut drifts = Vec::new();
    match &live.config_map {
        None => missing(cm_name.clone()),
        Some(live_cm) => drifts.extend(config_drift(&cm_name, live_cm, &desired.config_map)),
    }
    let set_name = format!("StatefulSet {}", desired.media_nodes.name_any());
    match &live.media_nodes {
        None => missing(set_name.clone()),
        Some(live_set) => {
            drifts.extend(media_nodes_drift(&set_name, live_set, &desired.media_nodes))
        }
    }
    for (live_service, desired_service) in live.services.iter().zip(&desired.services) {
        if live_service.is_none() {
            missing(format!("Service {}", desired_service.name_any()));
        }
    }
    found.extend(drifts);
    found
}

fn config_text(cm: &ConfigMap) -> Option<&str> {
    cm.data.as_ref()?.get(CONFIG_FILE).map(String::as_str)
}

fn config_drift(object: &str, live: &ConfigMap, desired: &ConfigMap) -> Vec<Drift> {
    let (Some(live_text), Some(desired_text)) = (config_text(live), config_text(desired)) else {
        return vec![Drift {
            object: object.into(),
            what: format!("{CONFIG_FILE} was removed; restored"),
            weakens_lock: true,
        }];
    };
    if live_text == desired_text {
        return Vec::new();
    }
    // Parse without validating: an edit that unlocks a setting must still be read to be named.
    let live_config: Result<MediaNodeConfig, _> = serde_yaml::from_str(live_text);
    let desired_config: Result<MediaNodeConfig, _> = serde_yaml::from_str(desired_text);
    let (Ok(live_config), Ok(desired_config)) = (live_config, desired_config) else {
        return vec![Drift {
            object: object.into(),
            what: format!("{CONFIG_FILE} was edited into an unreadable config; restored"),
            weakens_lock: true,
        }];
    };
    let mut found = Vec::new();
    let unlocked = match live_config.validate() {
        Err(bedside_crds::node_config::ConfigError::Invalid(violations)) => violations,
        _ => Vec::new(),
    };
    for violation in unlocked {
        found.push(Drift {
            object: object.into(),
            what: format!("{violation}; reverted"),
            weakens_lock: true,
        });
    }
    if found.is_empty() && live_config != desired_config {
        found.push(Drift {
            object: object.into(),
            what: format!("{CONFIG_FILE} was edited; restored to what the tenant's spec renders"),
            weakens_lock: false,
        });
    }
    found
}

fn pod(set: &StatefulSet) -> Option<&PodSpec> {
    set.spec.as_ref()?.template.spec.as_ref()
}

/// What another field manager added to the media pods that the operator never sets: host
/// namespaces, host paths, containers and volumes of its own. A server-side apply leaves fields
/// it does not own alone, so these are only undone by replacing the pod template
/// ([`template_tampered`] tells the apply to).
fn foreign_additions(live: &PodSpec, desired: Option<&PodSpec>) -> Vec<String> {
    let mut found = Vec::new();
    for (on, what) in [
        (live.host_network, "hostNetwork was enabled"),
        (live.host_pid, "hostPID was enabled"),
        (live.host_ipc, "hostIPC was enabled"),
    ] {
        if on == Some(true) {
            found.push(what.to_string());
        }
    }
    let ours_c: Vec<&str> = desired
        .map(|d| d.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let ours_v: Vec<&str> = desired
        .and_then(|d| d.volumes.as_ref())
        .map(|v| v.iter().map(|v| v.name.as_str()).collect())
        .unwrap_or_default();
    let ours_i: Vec<&str> = desired
        .and_then(|d| d.init_containers.as_ref())
        .map(|v| v.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    for c in &live.containers {
        if !ours_c.contains(&c.name.as_str()) {
            found.push(format!("container {} was added", c.name));
        }
    }
    for c in live.init_containers.iter().flatten() {
        if !ours_i.contains(&c.name.as_str()) {
            found.push(format!("init container {} was added", c.name));
        }
    }
    for v in live.volumes.iter().flatten() {
        if v.host_path.is_some() {
            found.push(format!("volume {} mounts a host path", v.name));
        } else if !ours_v.contains(&v.name.as_str())
            && !crate::build::spec_dependent_volume(&v.name)
        {
            found.push(format!("volume {} was added", v.name));
        }
    }
    found
}

/// True when the live pod template carries what a server-side apply cannot take back (see
/// [`foreign_additions`]) or a weakened security setting: the template is then replaced whole.
pub fn template_tampered(live: &StatefulSet, desired: &StatefulSet) -> bool {
    let Some(live_pod) = pod(live) else {
        return false;
    };
    !foreign_additions(live_pod, pod(desired)).is_empty()
}

fn media_nodes_drift(object: &str, live: &StatefulSet, desired: &StatefulSet) -> Vec<Drift> {
    let mut found = Vec::new();
    let mut weakened = |what: String| {
        found.push(Drift {
            object: object.into(),
            what,
            weakens_lock: true,
        })
    };
    let Some(live_pod) = pod(live) else {
        weakened("has no pod template; restored".into());
        return found;
    };
    for what in foreign_additions(live_pod, pod(desired)) {
        weakened(format!("{what}; removed (Pod Security restricted)"));
    }
    if live_pod
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root)
        != Some(true)
    {
        weakened("runAsNonRoot was removed from the pod; reverted".into());
    }
    for container in &live_pod.containers {
        let sc = container.security_context.as_ref();
        if sc.and_then(|s| s.privileged) == Some(true) {
            weakened(format!(
                "container {} was made privileged; reverted",
                container.name
            ));
        }
        if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            weakened(format!(
                "container {} may escalate privileges; reverted",
                container.name
            ));
        }
        if sc.and_then(|s| s.read_only_root_filesystem) != Some(true) {
            weakened(format!(
                "container {} got a writable root filesystem; reverted",
                container.name
            ));
        }
        let drops_all = sc
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        let adds = sc
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.as_ref())
            .is_some_and(|a| !a.is_empty());
        if !drops_all || adds {
            weakened(format!(
                "container {} gained capabilities; reverted",
                container.name
            ));
        }
    }
    let replicas = |d: &StatefulSet| d.spec.as_ref().and_then(|s| s.replicas);
    if replicas(live) != replicas(desired) {
        found.push(Drift {
            object: object.into(),
            what: format!(
                "replicas is {:?}, the tenant asks for {:?}; restored",
                replicas(live).unwrap_or(1),
                replicas(desired).unwrap_or(1)
            ),
            weakens_lock: false,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{BuildInputs, desired};

    fn mercy() -> Desired {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mercy-clinic.yaml");
        let mut tenant: bedside_crds::HealthcareTenant =
            serde_yaml::from_str(&std::fs::read_to_string(path).expect("example")).expect("tenant");
        tenant.metadata.uid = Some("uid-1".into());
        desired(
            &tenant,
            BuildInputs {
                media_allowed: true,
                operator_namespace: None,
                mixed_protocol_load_balancers: true,
            },
        )
        .expect("build")
    }

    fn live_as(desired: &Desired) -> Live {
        Live {
            config_map: Some(desired.config_map.clone()),
            media_nodes: Some(desired.media_nodes.clone()),
            services: desired.services.iter().cloned().map(Some).collect(),
        }
    }

    fn live_pod(live: &mut Live) -> &mut PodSpec {
        live.media_nodes
            .as_mut()
            .and_then(|d| d.spec.as_mut())
            .and_then(|s| s.template.spec.as_mut())
            .expect("pod")
    }

    #[test]
    fn nothing_differs_when_live_matches_desired() {
        let desired = mercy();
        assert_eq!(find(&live_as(&desired), &desired, true, false), []);
    }

    #[test]
    fn recording_enabled_in_the_configmap_is_named_as_a_weakened_lock() {
        let desired = mercy();
        let mut live = live_as(&desired);
        let data = live
            .config_map
            .as_mut()
            .and_then(|c| c.data.as_mut())
            .expect("data");
        let text = data[CONFIG_FILE].replace("recording: Disabled", "recording: Enabled");
        data.insert(CONFIG_FILE.into(), text);
        let drift = find(&live, &desired, true, false);
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert!(drift[0].weakens_lock);
        assert!(
            drift[0].what.starts_with("meetings.recording: is Enabled"),
            "{}",
            drift[0]
        );
    }

    #[test]
    fn a_privileged_container_and_a_deleted_service_are_both_reported() {
        let desired = mercy();
        let mut live = live_as(&desired);
        let pod = live_pod(&mut live);
        pod.containers[0]
            .security_context
            .as_mut()
            .expect("sc")
            .privileged = Some(true);
        live.services[1] = None;
        let drift: Vec<String> = find(&live, &desired, true, false)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(drift.iter().any(|d| d.contains("was deleted")), "{drift:?}");
        assert!(
            drift.iter().any(|d| d.contains("made privileged")),
            "{drift:?}"
        );
    }

    #[test]
    fn a_spec_change_is_not_drift_but_a_weakened_lock_still_is() {
        let desired = mercy();
        let mut live = live_as(&desired);
        if let Some(spec) = live.media_nodes.as_mut().and_then(|s| s.spec.as_mut()) {
            spec.replicas = Some(5);
        }
        assert_eq!(
            find(&live, &desired, true, true),
            [],
            "the tenant asked for the new size"
        );
        assert_eq!(
            find(&live, &desired, true, false).len(),
            1,
            "an edit of the size is drift"
        );
        let pod = live_pod(&mut live);
        pod.host_network = Some(true);
        let drift = find(&live, &desired, true, true);
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert!(drift[0].weakens_lock);
    }

    #[test]
    fn what_another_manager_added_to_the_pods_is_named_and_the_template_marked_for_replacing() {
        use k8s_openapi::api::core::v1::{Container, HostPathVolumeSource, Volume};
        let desired = mercy();
        let mut live = live_as(&desired);
        let live_set = live.media_nodes.clone().expect("set");
        assert!(!template_tampered(&live_set, &desired.media_nodes));
        let pod = live_pod(&mut live);
        pod.host_pid = Some(true);
        pod.containers.push(Container {
            name: "sidecar".into(),
            ..Default::default()
        });
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: "host".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let drift = find(&live, &desired, true, false);
        let said: Vec<&str> = drift.iter().map(|d| d.what.as_str()).collect();
        for expected in [
            "hostPID was enabled",
            "container sidecar was added",
            "volume host mounts a host path",
        ] {
            assert!(said.iter().any(|w| w.starts_with(expected)), "{said:?}");
        }
        assert!(drift.iter().all(|d| d.weakens_lock));
        let tampered = live.media_nodes.expect("set");
        assert!(template_tampered(&tampered, &desired.media_nodes));
    }

    #[test]
    fn a_relay_or_sink_volume_the_spec_no_longer_asks_for_is_not_another_managers() {
        use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume};
        let desired = mercy();
        let mut live = live_as(&desired);
        for name in ["relay", "sink-7", "sink-notes"] {
            live_pod(&mut live)
                .volumes
                .get_or_insert_with(Vec::new)
                .push(Volume {
                    name: name.into(),
                    secret: Some(SecretVolumeSource::default()),
                    ..Default::default()
                });
        }
        let drift = find(&live, &desired, true, true);
        let said: Vec<&str> = drift.iter().map(|d| d.what.as_str()).collect();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("volume sink-notes was added"),
            "only a name the operator never uses: {said:?}"
        );
    }

    #[test]
    fn missing_children_of_a_new_tenant_are_not_drift() {
        assert_eq!(find(&Live::default(), &mercy(), false, false), []);
    }
}
