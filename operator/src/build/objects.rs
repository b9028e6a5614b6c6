//! The Kubernetes objects of one tenant, written as the JSON a platform engineer would read,
//! then checked into k8s-openapi types (a typo in a field name fails the unit tests).

use std::collections::BTreeMap;

use bedside_crds::HealthcareTenant;
use bedside_crds::tenant::{AuditDestination, HealthcareTenantSpec, IssuerKind, MediaServiceType};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::core::{ApiResource, DynamicObject};
use serde_json::{Value, json};

use super::config::{
    ADDRESSES_DIR, API_DIR, AUDIT_BUFFER_DIR, AUDIT_HMAC_KEY, CONFIG_DIR, INITIAL_API_CREDENTIAL,
    JOIN_TOKEN_KEY, KEYS_DIR, RELAY_SECRET_DIR, RELAY_SECRET_KEY, SINKS_DIR, TLS_DIR, config_hash,
    node_config,
};
use super::meta::{
    container_resources, metadata, one_file_config_map, one_key_secret,
    restricted_container_security, restricted_pod_security, tls_secret_name, typed,
};
use super::storage::{self, AUDIT_VOLUME};
use super::{BuildError, BuildInputs, Desired};
use crate::names::{
    CONFIG_FILE, CONFIG_HASH_ANNOTATION, ChildNames, MEDIA_PORT, METRICS_PORT, POD_NAME_LABEL,
    SERVICE_ROLE_LABEL, SIGNALING_PORT, default_image, pod_labels, selector_labels,
};
use crate::thirdparty::certmanager::Certificate;

pub(super) fn desired(
    tenant: &HealthcareTenant,
    inputs: BuildInputs,
) -> Result<Desired, BuildError> {
    let names = ChildNames::of(tenant);
    let config_text = node_config(tenant).to_yaml();
    let hash = config_hash(&config_text);

    let config_map =
        one_file_config_map(metadata(tenant, &names.config)?, CONFIG_FILE, config_text)?;

    let replicas = media_replicas(tenant, &inputs);
    Ok(Desired {
        config_map,
        media_nodes: stateful_set(tenant, &names, &hash, replicas)?,
        config_hash: hash,
        services: services(tenant, &names, replicas, &inputs)?,
        network_policy: network_policy(tenant, &names, inputs.operator_namespace.clone())?,
        access: super::access::media_access(tenant, &names)?,
    })
}

/// How many media pods run: the tenant's replicas, or none while the BAA is not in force.
fn media_replicas(tenant: &HealthcareTenant, inputs: &BuildInputs) -> i32 {
    if inputs.media_allowed {
        tenant.spec.media_nodes.replicas
    } else {
        0
    }
}

/// The relay's shared secret, in the media pods of a tenant with `spec.relay`.
const RELAY_VOLUME: &str = "relay";
/// One per audit sink with a Secret: `sink-<index>`.
const SINK_VOLUME_PREFIX: &str = "sink-";

/// Whether a media pod volume named `name` is one the operator adds for some spec (a relay, an
/// audit sink's Secret): live but no longer desired, it is the spec's change, not another
/// manager's addition, and the operator's next apply removes it.
pub fn spec_dependent_volume(name: &str) -> bool {
    name == RELAY_VOLUME
        || name
            .strip_prefix(SINK_VOLUME_PREFIX)
            .is_some_and(|i| i.parse::<usize>().is_ok())
}

/// A StatefulSet, not a Deployment: each pod keeps its name (`<set>-<ordinal>`) across
/// restarts, so it keeps its own media Service, its advertised address and, later, its
/// storage. Pods start and stop in parallel; a rolling update replaces one at a time.
fn stateful_set(
    tenant: &HealthcareTenant,
    names: &ChildNames,
    hash: &str,
    replicas: i32,
) -> Result<k8s_openapi::api::apps::v1::StatefulSet, BuildError> {
    let spec = &tenant.spec;
    let tls_secret = tls_secret_name(tenant);

    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": names.config}}),
        json!({"name": "tls", "secret": {"secretName": tls_secret}}),
        json!({"name": "keys", "secret": {"secretName": names.keys}}),
    ];
    // In this place, so that an operator upgrade leaves the pod template (and the pods) alone.
    volumes.extend(storage::pod_volume(spec));
    volumes.extend([
        json!({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}),
        // Optional: a pod starts before the operator has written its address, and is not
        // Ready until the kubelet brings the file in.
        json!({"name": "addresses", "configMap": {"name": names.addresses, "optional": true}}),
        json!({"name": "api-credentials", "secret": {"secretName": names.api_credentials}}),
    ]);
    let mut mounts = vec![
        json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "tls", "mountPath": TLS_DIR, "readOnly": true}),
        json!({"name": "keys", "mountPath": KEYS_DIR, "readOnly": true}),
        json!({"name": AUDIT_VOLUME, "mountPath": AUDIT_BUFFER_DIR}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
        json!({"name": "addresses", "mountPath": ADDRESSES_DIR, "readOnly": true}),
        // A whole-Secret mount (no subPath): credentials added or removed reach the pod.
        json!({"name": "api-credentials", "mountPath": API_DIR, "readOnly": true}),
    ];
    if spec.relay.is_some() {
        volumes.push(json!({"name": RELAY_VOLUME, "secret": {"secretName": names.relay_secret, "items": [{"key": RELAY_SECRET_KEY, "path": RELAY_SECRET_KEY}]}}));
        mounts.push(json!({"name": RELAY_VOLUME, "mountPath": RELAY_SECRET_DIR, "readOnly": true}));
    }
    for (i, sink) in spec.audit.sinks.iter().enumerate() {
        let (secret, key, file) = match sink.destination() {
            Some(AuditDestination::Syslog(s)) => (&s.ca_secret, "ca.crt", "ca.crt"),
            Some(AuditDestination::Webhook(w)) => (&w.token_secret, "token", "token"),
            _ => continue,
        };
        let volume = format!("{SINK_VOLUME_PREFIX}{i}");
        volumes.push(json!({"name": volume, "secret": {"secretName": secret, "items": [{"key": key, "path": file}]}}));
        mounts.push(
            json!({"name": volume, "mountPath": format!("{SINKS_DIR}/{i}"), "readOnly": true}),
        );
    }

    let resources = container_resources(spec.media_nodes.resources.as_ref());
    let image = spec.media_nodes.image.clone().unwrap_or_else(default_image);
    let probe = |path: &str, period: i32| json!({"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3});

    let mut set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": metadata(tenant, &names.media_nodes)?,
        "spec": {
            "replicas": replicas,
            "serviceName": names.metrics,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector_labels(tenant)},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {
                    // No version label here: an operator upgrade must not roll the pods
                    // (and drop live calls) when the tenant's spec did not change.
                    "labels": pod_labels(tenant),
                    "annotations": {CONFIG_HASH_ANNOTATION: hash},
                },
                "spec": {
                    // The pods place rooms through Leases: their own ServiceAccount's
                    // token, bound to a Role for leases in this namespace only.
                    "serviceAccountName": names.media_account,
                    "automountServiceAccountToken": true,
                    "enableServiceLinks": false,
                    // A stopping pod keeps its calls for the drain grace, then has
                    // half a minute to tell its clients and flush its audit trail.
                    "terminationGracePeriodSeconds": termination_grace(spec),
                    "securityContext": restricted_pod_security(),
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector_labels(tenant)},
                    }],
                    "containers": [{
                        "name": "media-node",
                        "image": image,
                        "args": ["run", "--config", format!("{CONFIG_DIR}/{CONFIG_FILE}")],
                        // The node's name in its audit chain, metrics and logs, and the
                        // file of the addresses ConfigMap it reads; where its placement
                        // Leases live, and where the other pods reach its signaling.
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        ],
                        "ports": [
                            {"name": "signaling", "containerPort": SIGNALING_PORT, "protocol": "TCP"},
                            {"name": "media", "containerPort": MEDIA_PORT, "protocol": "UDP"},
                            // ICE-TCP, for browsers on networks that block UDP.
                            {"name": "media-tcp", "containerPort": MEDIA_PORT, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                        ],
                        "resources": resources,
                        "readinessProbe": probe("/readyz", 5),
                        "livenessProbe": probe("/healthz", 10),
                        "securityContext": restricted_container_security(),
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    });
    // Claims outlive their pods (and a scale-down): a pod that comes back under the same name
    // delivers what its predecessor buffered, in the same audit chain.
    let claims = storage::claim_templates(spec, json!(selector_labels(tenant)));
    if !claims.is_empty() {
        set["spec"]["volumeClaimTemplates"] = claims.into();
    }
    typed("StatefulSet", set)
}

fn termination_grace(spec: &HealthcareTenantSpec) -> u64 {
    bedside_crds::policy::drain_grace(spec.meetings.max_duration.into()).as_secs() + 30
}

/// Signaling (shared: any pod answers), metrics (headless: Prometheus scrapes each pod, and it
/// governs the StatefulSet) and one media Service per pod, so that each pod's advertised
/// address reaches that pod and no other.
fn services(
    tenant: &HealthcareTenant,
    names: &ChildNames,
    replicas: i32,
    inputs: &BuildInputs,
) -> Result<Vec<k8s_openapi::api::core::v1::Service>, BuildError> {
    let exposed = match tenant.spec.media_nodes.service_type {
        MediaServiceType::LoadBalancer => "LoadBalancer",
        MediaServiceType::NodePort => "NodePort",
    };
    let service =
        |name: &str, type_: &str, ports: Vec<Value>, selector: Value| -> Result<_, BuildError> {
            let mut meta = metadata(tenant, name)?;
            // A ServiceMonitor selects the metrics Service by this label; the operator finds the
            // per-pod media Services by it.
            meta["labels"][SERVICE_ROLE_LABEL] = ports[0]["name"].clone();
            let mut spec = json!({"type": type_, "selector": selector, "ports": ports});
            if type_ == "LoadBalancer" {
                // The node sees each client's own address: the per-network connection,
                // join-attempt and passcode limits count people, not the cluster's nodes
                // (with Cluster, kube-proxy rewrites every source to a node's address). The
                // load balancer sends only to nodes that run a pod (health-check node port).
                spec["externalTrafficPolicy"] = json!("Local");
            }
            typed(
                "Service",
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": meta,
                    "spec": spec,
                }),
            )
        };
    let all_pods = json!(selector_labels(tenant));
    let mut services = vec![
        service(
            &names.signaling,
            exposed,
            vec![
                json!({"name": "signaling", "port": 443, "targetPort": "signaling", "protocol": "TCP"}),
            ],
            all_pods.clone(),
        )?,
        {
            let mut metrics: k8s_openapi::api::core::v1::Service = service(
                &names.metrics,
                "ClusterIP",
                vec![
                    json!({"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}),
                ],
                all_pods,
            )?;
            if let Some(spec) = metrics.spec.as_mut() {
                spec.cluster_ip = Some("None".into());
            }
            metrics
        },
    ];
    // ICE-TCP on the same port as the UDP candidate: a browser reaches both at the one address
    // the pod advertises. A load balancer carries both only where the cluster serves
    // mixed-protocol LoadBalancers (Kubernetes 1.24 and later); elsewhere media stays UDP only.
    let mut media_ports = vec![
        json!({"name": "media", "port": MEDIA_PORT, "targetPort": "media", "protocol": "UDP"}),
    ];
    if exposed == "NodePort" || inputs.mixed_protocol_load_balancers {
        media_ports.push(json!({"name": "media-tcp", "port": MEDIA_PORT, "targetPort": "media-tcp", "protocol": "TCP"}));
    }
    for ordinal in 0..replicas {
        let pod = names.media_pod(ordinal);
        let mut media: k8s_openapi::api::core::v1::Service = service(
            &pod,
            exposed,
            media_ports.clone(),
            json!({POD_NAME_LABEL: pod}),
        )?;
        // The pod's media follows the pod whatever its readiness: a draining pod is not Ready
        // (no new visits reach it through signaling) but its calls in progress must go on, and
        // kube-proxy would cut their UDP flows the moment it left the endpoints.
        if let Some(spec) = media.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(true);
        }
        services.push(media);
    }
    Ok(services)
}

/// The TCP port of each audit sink, the only TCP the media nodes may open.
fn sink_ports(tenant: &HealthcareTenant) -> Vec<i64> {
    let mut ports: Vec<i64> = tenant
        .spec
        .audit
        .sinks
        .iter()
        .filter_map(|sink| match sink.destination()? {
            AuditDestination::Syslog(s) => s.address.rsplit(':').next()?.parse().ok(),
            AuditDestination::Webhook(w) => {
                let authority = w.url.strip_prefix("https://")?.split('/').next()?;
                match authority.rsplit_once(':') {
                    Some((_, port)) if !authority.ends_with(']') => port.parse().ok(),
                    _ => Some(443),
                }
            }
            AuditDestination::Stdout => None,
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn network_policy(
    tenant: &HealthcareTenant,
    names: &ChildNames,
    operator_namespace: Option<String>,
) -> Result<k8s_openapi::api::networking::v1::NetworkPolicy, BuildError> {
    let mut ingress = vec![json!({
        "ports": [
            {"protocol": "TCP", "port": SIGNALING_PORT},
            {"protocol": "UDP", "port": MEDIA_PORT},
            {"protocol": "TCP", "port": MEDIA_PORT},
        ],
    })];
    if let Some(monitoring) = &tenant.spec.monitoring.namespace {
        ingress.push(json!({
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": monitoring}}}],
            "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
        }));
    }
    if let Some(operator) = operator_namespace {
        // The operator reads /audit/health for the AuditSinksReady condition.
        ingress.push(json!({
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator}}}],
            "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
        }));
    }
    // DNS and the API server, then each audit sink's port, once each.
    let mut ports = vec![53, 443, 6443];
    for port in sink_ports(tenant) {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let tcp_out: Vec<Value> = ports
        .iter()
        .map(|p| json!({"protocol": "TCP", "port": p}))
        .collect();
    typed(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata(tenant, &names.network_policy)?,
            "spec": {
                "podSelector": {"matchLabels": selector_labels(tenant)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": [
                    // Media flows to browsers wherever they are, and DNS.
                    {"ports": [{"protocol": "UDP"}]},
                    // TCP only for DNS, the audit sinks and the API server (placement Leases;
                    // 443 before and 6443 after the kubernetes Service's translation)...
                    {"ports": tcp_out},
                    // ...and the tenant's other pods, to carry a join to its room's pod.
                    {
                        "to": [{"podSelector": {"matchLabels": selector_labels(tenant)}}],
                        "ports": [{"protocol": "TCP", "port": SIGNALING_PORT}],
                    },
                ],
            },
        }),
    )
}

/// The tenant's key material: generated once, never overwritten by a reconcile, and kept
/// when the tenant is deleted.
pub fn keys_secret(
    tenant: &HealthcareTenant,
    join_token_key: Vec<u8>,
    audit_hmac_key: Vec<u8>,
) -> Result<Secret, BuildError> {
    let mut secret: Secret = typed(
        "Secret",
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": metadata(tenant, &ChildNames::of(tenant).keys)?,
        }),
    )?;
    secret.data = Some(BTreeMap::from([
        (JOIN_TOKEN_KEY.to_string(), ByteString(join_token_key)),
        (AUDIT_HMAC_KEY.to_string(), ByteString(audit_hmac_key)),
    ]));
    // Retained past the tenant (docs/audit.md, key escrow): no owner reference, and the
    // tenant's uid to tell whose keys these are.
    secret.metadata.owner_references = None;
    secret.metadata.annotations = Some(BTreeMap::from([(
        crate::names::KEYS_OF_ANNOTATION.to_string(),
        kube::ResourceExt::uid(tenant).unwrap_or_default(),
    )]));
    Ok(secret)
}

/// The visits API's credentials, with one to start: generated once, never overwritten by a
/// reconcile (the platform team adds and removes credentials to rotate them).
pub fn api_secret(tenant: &HealthcareTenant, credential: String) -> Result<Secret, BuildError> {
    let name = ChildNames::of(tenant).api_credentials;
    one_key_secret(
        tenant,
        &name,
        INITIAL_API_CREDENTIAL,
        credential.into_bytes(),
    )
}

/// A cert-manager Certificate for the signaling endpoint, when the tenant names an issuer.
pub fn certificate(tenant: &HealthcareTenant) -> Result<Option<Certificate>, BuildError> {
    let Some(issuer) = &tenant.spec.tls.issuer_ref else {
        return Ok(None);
    };
    let names = ChildNames::of(tenant);
    // One certificate for signaling and the relay's TURN over TLS.
    let mut dns_names = tenant.spec.tls.dns_names.clone();
    dns_names.extend(tenant.spec.relay.as_ref().map(|r| r.hostname.clone()));
    let kind = match issuer.kind {
        IssuerKind::Issuer => "Issuer",
        IssuerKind::ClusterIssuer => "ClusterIssuer",
    };
    typed(
        "Certificate",
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": metadata(tenant, &names.certificate_secret)?,
            "spec": {
                "secretName": names.certificate_secret,
                "dnsNames": dns_names,
                "issuerRef": {"name": issuer.name, "kind": kind, "group": "cert-manager.io"},
                // ECDSA P-256 keys, a fresh one at every renewal.
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "usages": ["server auth", "digital signature", "key encipherment"],
            },
        }),
    )
    .map(Some)
}

/// A prometheus-operator ServiceMonitor for the media nodes' metrics Service.
pub fn service_monitor(
    tenant: &HealthcareTenant,
    resource: &ApiResource,
) -> Result<DynamicObject, BuildError> {
    let mut selector = selector_labels(tenant);
    selector.insert(SERVICE_ROLE_LABEL.into(), "metrics".into());
    typed(
        "ServiceMonitor",
        json!({
            "apiVersion": resource.api_version, "kind": "ServiceMonitor",
            "metadata": metadata(tenant, &ChildNames::of(tenant).metrics)?,
            "spec": {
                "selector": {"matchLabels": selector},
                "endpoints": [{"port": "metrics", "interval": "30s", "path": "/metrics"}],
            },
        }),
    )
}

/// A PodDisruptionBudget in whichever policy version the server serves (`policy/v1` from
/// 1.21, `policy/v1beta1` before).
pub fn pod_disruption_budget(
    tenant: &HealthcareTenant,
    resource: &ApiResource,
) -> Result<DynamicObject, BuildError> {
    let names = ChildNames::of(tenant);
    typed(
        "PodDisruptionBudget",
        json!({
            "apiVersion": resource.api_version, "kind": "PodDisruptionBudget",
            "metadata": metadata(tenant, &names.disruption_budget)?,
            "spec": {
                "maxUnavailable": 1,
                "selector": {"matchLabels": selector_labels(tenant)},
            },
        }),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::build::desired;
    use bedside_crds::MediaNodeConfig;

    pub(crate) fn tenant(yaml_file: &str) -> HealthcareTenant {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(yaml_file);
        let text = std::fs::read_to_string(path).expect("example");
        let mut tenant: HealthcareTenant = serde_yaml::from_str(&text).expect("tenant");
        tenant.metadata.uid = Some("0b5f7a52-3c3e-4f7b-9a55-6a0e6f0c1d2e".into());
        tenant
    }

    fn media_pod(desired: Desired) -> k8s_openapi::api::core::v1::PodSpec {
        desired
            .media_nodes
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod")
    }

    fn inputs() -> BuildInputs {
        BuildInputs {
            media_allowed: true,
            operator_namespace: None,
            mixed_protocol_load_balancers: true,
        }
    }

    #[test]
    fn rendered_config_carries_the_locked_settings_and_passes_the_node_check() {
        let desired = desired(&tenant("mercy-clinic.yaml"), inputs()).expect("build");
        let text = &desired.config_map.data.as_ref().expect("data")[CONFIG_FILE];
        let config =
            MediaNodeConfig::from_yaml(text).expect("the node accepts what the operator renders");
        assert_eq!(
            config.meetings,
            bedside_crds::node_config::MeetingSettings::default()
        );
        assert_eq!(config.audit.sinks.len(), 3);
    }

    #[test]
    fn media_pods_are_pod_security_restricted() {
        let media_nodes = desired(&tenant("mercy-clinic.yaml"), inputs())
            .expect("build")
            .media_nodes;
        let pod = media_nodes
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod spec");
        assert_eq!(pod.host_network, None);
        let pod_security = pod.security_context.expect("pod security context");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.expect("seccomp").type_,
            "RuntimeDefault"
        );
        for container in pod.containers {
            let sc = container
                .security_context
                .expect("container security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(
                sc.capabilities.expect("caps").drop,
                Some(vec!["ALL".to_string()])
            );
            assert!(
                container
                    .ports
                    .iter()
                    .flatten()
                    .all(|p| p.host_port.is_none())
            );
        }
    }

    #[test]
    fn the_pod_template_carries_nothing_that_changes_with_the_operator_version() {
        let mut mercy = tenant("mercy-clinic.yaml");
        mercy.spec.media_nodes.image = Some("registry.example/bedside-media-node:pinned".into());
        let template = desired(&mercy, inputs())
            .expect("build")
            .media_nodes
            .spec
            .expect("spec")
            .template;
        let text = serde_json::to_string(&template).expect("json");
        assert!(!text.contains(env!("CARGO_PKG_VERSION")), "{text}");
        let annotations = template
            .metadata
            .expect("meta")
            .annotations
            .expect("annotations");
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["bedside.health/config-hash"]
        );
    }

    #[test]
    fn rendered_objects_match_the_reviewed_snapshot() {
        // The whole desired state of the mercy-clinic example, as reviewers read it. Update
        // with BEDSIDE_UPDATE_SNAPSHOTS=1 and review the diff: a changed config hash rolls every
        // tenant's pods on upgrade.
        let desired = desired(&tenant("mercy-clinic.yaml"), inputs()).expect("build");
        let mut rendered = String::new();
        let mut push = |value: serde_json::Value| {
            let mut value = value;
            if let Some(labels) = value
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                labels.remove("app.kubernetes.io/version");
            }
            rendered.push_str("---\n");
            rendered.push_str(&serde_yaml::to_string(&value).expect("yaml"));
        };
        push(serde_json::to_value(&desired.config_map).expect("json"));
        push(serde_json::to_value(&desired.media_nodes).expect("json"));
        for service in &desired.services {
            push(serde_json::to_value(service).expect("json"));
        }
        push(serde_json::to_value(&desired.network_policy).expect("json"));
        push(serde_json::to_value(&desired.access.service_account).expect("json"));
        push(serde_json::to_value(&desired.access.role).expect("json"));
        push(serde_json::to_value(&desired.access.role_binding).expect("json"));
        let rendered = rendered.replace(&format!(":{}", env!("CARGO_PKG_VERSION")), ":VERSION");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots/mercy-clinic.yaml");
        if std::env::var_os("BEDSIDE_UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            std::fs::write(&path, &rendered).expect("write snapshot");
        }
        let snapshot = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            snapshot == rendered,
            "rendered objects differ from {}; review, then rerun with BEDSIDE_UPDATE_SNAPSHOTS=1",
            path.display()
        );
    }

    /// (protocol, port, targetPort) of each media Service's ports, and the policy's open ports.
    fn media_exposure(
        inputs: BuildInputs,
        service_type: MediaServiceType,
    ) -> (Vec<Vec<String>>, Value) {
        let mut mercy = tenant("mercy-clinic.yaml");
        mercy.spec.media_nodes.service_type = service_type;
        let desired = desired(&mercy, inputs).expect("build");
        let ports = desired
            .services
            .iter()
            .filter(|s| s.metadata.labels.as_ref().expect("labels")[SERVICE_ROLE_LABEL] == "media")
            .map(|s| {
                let spec = serde_json::to_value(s.spec.as_ref().expect("spec")).expect("json");
                spec["ports"]
                    .as_array()
                    .expect("ports")
                    .iter()
                    .map(|p| format!("{} {} {}", p["protocol"], p["port"], p["targetPort"]))
                    .collect()
            })
            .collect();
        let policy = serde_json::to_value(&desired.network_policy).expect("json");
        (ports, policy["spec"]["ingress"][0]["ports"].clone())
    }

    #[test]
    fn each_media_pod_takes_ice_tcp_on_its_udp_port_where_the_cluster_can_expose_it() {
        let both = vec![
            r#""UDP" 3478 "media""#.to_string(),
            r#""TCP" 3478 "media-tcp""#.into(),
        ];
        let (ports, open) = media_exposure(inputs(), MediaServiceType::LoadBalancer);
        assert_eq!(ports, [both.clone(), both.clone()]);
        assert!(
            open.as_array()
                .expect("ports")
                .contains(&json!({"protocol": "TCP", "port": MEDIA_PORT})),
            "the NetworkPolicy lets ICE-TCP in: {open}"
        );
        // A cluster that refuses mixed-protocol load balancers: UDP only behind them...
        let older = BuildInputs {
            mixed_protocol_load_balancers: false,
            ..inputs()
        };
        let (ports, _) = media_exposure(older.clone(), MediaServiceType::LoadBalancer);
        assert_eq!(ports, [both[..1].to_vec(), both[..1].to_vec()]);
        // ...while node ports carry both protocols on any cluster.
        let (ports, _) = media_exposure(older, MediaServiceType::NodePort);
        assert_eq!(ports, [both.clone(), both]);
        let pod = media_pod(desired(&tenant("mercy-clinic.yaml"), inputs()).expect("build"));
        let declared = serde_json::to_value(&pod.containers[0].ports).expect("json");
        assert!(
            declared.as_array().expect("ports").contains(
                &json!({"name": "media-tcp", "containerPort": MEDIA_PORT, "protocol": "TCP"})
            ),
            "{declared}"
        );
    }

    #[test]
    fn each_media_pod_gets_a_media_service_of_its_own_and_knows_its_name() {
        let desired = desired(&tenant("mercy-clinic.yaml"), inputs()).expect("build");
        let media: Vec<(String, Value)> = desired
            .services
            .iter()
            .filter(|s| s.metadata.labels.as_ref().expect("labels")[SERVICE_ROLE_LABEL] == "media")
            .map(|s| {
                let spec = serde_json::to_value(s.spec.as_ref().expect("spec")).expect("json");
                (
                    s.metadata.name.clone().unwrap_or_default(),
                    spec["selector"].clone(),
                )
            })
            .collect();
        assert_eq!(
            media,
            [
                (
                    "mercy-clinic-media-0".into(),
                    json!({POD_NAME_LABEL: "mercy-clinic-media-0"})
                ),
                (
                    "mercy-clinic-media-1".into(),
                    json!({POD_NAME_LABEL: "mercy-clinic-media-1"})
                ),
            ]
        );
        for service in &desired.services {
            let spec = service.spec.as_ref().expect("spec");
            let exposed = spec.type_.as_deref() == Some("LoadBalancer");
            assert_eq!(
                spec.external_traffic_policy.as_deref(),
                exposed.then_some("Local"),
                "clients' own addresses reach the node through {:?}",
                service.metadata.name
            );
        }
        let pod = media_pod(desired);
        let env = serde_json::to_value(&pod.containers[0].env).expect("json");
        assert_eq!(env[0]["name"], "POD_NAME");
        assert_eq!(
            env[0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        let probes = (
            pod.containers[0]
                .readiness_probe
                .clone()
                .expect("readiness"),
            pod.containers[0].liveness_probe.clone().expect("liveness"),
        );
        let path = |p: &k8s_openapi::api::core::v1::Probe| {
            p.http_get
                .as_ref()
                .and_then(|h| h.path.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            (path(&probes.0), path(&probes.1)),
            ("/readyz".into(), "/healthz".into())
        );
    }

    #[test]
    fn media_nodes_scale_to_zero_while_the_baa_is_not_in_force() {
        let mut inputs = inputs();
        inputs.media_allowed = false;
        let stopped = desired(&tenant("mercy-clinic.yaml"), inputs).expect("build");
        assert_eq!(stopped.media_nodes.spec.expect("spec").replicas, Some(0));
        assert_eq!(
            stopped.services.len(),
            2,
            "no media Service for pods that do not run"
        );
    }

    #[test]
    fn the_config_hash_changes_with_the_config_and_only_with_it() {
        let mercy = tenant("mercy-clinic.yaml");
        let a = desired(&mercy, inputs()).expect("build").config_hash;
        let mut scaled = mercy.clone();
        scaled.spec.media_nodes.replicas = 5;
        assert_eq!(a, desired(&scaled, inputs()).expect("build").config_hash);
        let mut shorter = mercy.clone();
        shorter.spec.meetings.idle_timeout = std::time::Duration::from_secs(600).into();
        assert_ne!(a, desired(&shorter, inputs()).expect("build").config_hash);
        // Pinned: a changed renderer that alters this hash would roll every tenant's pods.
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn every_child_is_owned_by_the_tenant_and_labelled() {
        let desired = desired(&tenant("mercy-clinic.yaml"), inputs()).expect("build");
        let mut metas = vec![
            desired.config_map.metadata.clone(),
            desired.media_nodes.metadata.clone(),
            desired.network_policy.metadata.clone(),
        ];
        metas.extend(desired.services.iter().map(|s| s.metadata.clone()));
        for meta in metas {
            let owner = &meta.owner_references.expect("owner")[0];
            assert_eq!(owner.kind, "HealthcareTenant");
            assert_eq!(owner.controller, Some(true));
            let labels = meta.labels.expect("labels");
            assert_eq!(labels["bedside.health/tenant"], "mercy-clinic");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "bedside-operator");
        }
    }

    #[test]
    fn the_operators_namespace_may_read_the_nodes_audit_health() {
        let mut with_operator = inputs();
        with_operator.operator_namespace = Some("bedside-system".into());
        let policy = desired(&tenant("mercy-clinic.yaml"), with_operator)
            .expect("build")
            .network_policy;
        let ingress = serde_json::to_value(&policy).expect("json")["spec"]["ingress"].clone();
        assert!(
            ingress.as_array().expect("rules").iter().any(|rule| {
                rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    == "bedside-system"
                    && rule["ports"][0]["port"] == METRICS_PORT
            }),
            "{ingress}"
        );
    }

    #[test]
    fn egress_allows_tcp_only_to_dns_the_api_server_the_sinks_and_the_tenants_own_pods() {
        let tenant = tenant("mercy-clinic.yaml");
        assert_eq!(sink_ports(&tenant), [443, 6514]);
        let spec = desired(&tenant, inputs())
            .expect("build")
            .network_policy
            .spec
            .expect("spec");
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".into(), "Egress".into()])
        );
        let metrics_from = &spec.ingress.expect("ingress")[1]
            .from
            .clone()
            .expect("from")[0];
        assert_eq!(
            metrics_from
                .namespace_selector
                .clone()
                .expect("ns")
                .match_labels
                .expect("labels")["kubernetes.io/metadata.name"],
            "monitoring"
        );
        let egress = spec.egress.expect("egress");
        let ports = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyEgressRule| {
            rule.ports
                .iter()
                .flatten()
                .map(|p| {
                    let port = match &p.port {
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                            n.to_string()
                        }
                        other => format!("{other:?}"),
                    };
                    format!("{}/{port}", p.protocol.clone().unwrap_or_default())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(egress.len(), 3);
        // UDP anywhere (media to browsers, DNS), with no port: no TCP rides on it.
        assert_eq!(
            egress[0].ports.as_ref().expect("ports")[0]
                .protocol
                .as_deref(),
            Some("UDP")
        );
        assert!(egress[0].ports.as_ref().expect("ports")[0].port.is_none());
        // TCP: DNS, the API server (443, 6443 after the kubernetes Service), the sinks, once each.
        assert_eq!(
            ports(&egress[1]),
            ["TCP/53", "TCP/443", "TCP/6443", "TCP/6514"]
        );
        assert!(egress[1].to.is_none());
        // Signaling on the tenant's own media pods only (a join carried to its room's pod).
        assert_eq!(ports(&egress[2]), ["TCP/8443"]);
        let to = egress[2].to.clone().expect("to");
        assert_eq!(
            to[0]
                .pod_selector
                .clone()
                .expect("pods")
                .match_labels
                .expect("labels"),
            selector_labels(&tenant)
        );
        assert!(to[0].namespace_selector.is_none());
    }

    #[test]
    fn an_issuer_gets_a_certificate_for_every_dns_name_and_a_secret_gets_none() {
        let issued = certificate(&tenant("mercy-clinic.yaml"))
            .expect("build")
            .expect("issuer-based TLS");
        assert_eq!(
            issued.spec.dns_names,
            Some(vec!["meet.mercy.example".to_string()])
        );
        assert_eq!(
            issued.spec.issuer_ref.kind.as_deref(),
            Some("ClusterIssuer")
        );
        assert_eq!(issued.spec.secret_name, "mercy-clinic-tls");
        assert!(
            certificate(&tenant("lakeside-behavioral.yaml"))
                .expect("build")
                .is_none()
        );
    }

    #[test]
    fn the_service_monitor_selects_only_the_metrics_service() {
        let mercy = tenant("mercy-clinic.yaml");
        let desired = desired(&mercy, inputs()).expect("build");
        let resource = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
        ));
        let monitor = service_monitor(&mercy, &resource).expect("build");
        let selector = &monitor.data["spec"]["selector"]["matchLabels"];
        let selected: Vec<String> = desired
            .services
            .iter()
            .filter(|s| {
                let labels = s.metadata.labels.clone().unwrap_or_default();
                selector
                    .as_object()
                    .expect("labels")
                    .iter()
                    .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
            })
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(selected, ["mercy-clinic-metrics"]);
    }

    #[test]
    fn sink_secrets_are_mounted_where_the_config_points() {
        let desired = desired(&tenant("mercy-clinic.yaml"), inputs()).expect("build");
        let pod = media_pod(desired);
        let mounts: Vec<String> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect();
        assert!(mounts.contains(&format!("{SINKS_DIR}/1")), "{mounts:?}");
        assert!(mounts.contains(&format!("{SINKS_DIR}/2")), "{mounts:?}");
    }
}
