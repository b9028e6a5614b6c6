//! The tenant's TURN relay (coturn): its configuration file, rendered from what the tenant's
//! media nodes need. One definition, used by the relay the operator runs and by the tests that
//! start a real coturn from it.
//!
//! What keeps it from being an open relay: only credentials derived from the tenant's shared
//! secret (`use-auth-secret`, per join, expiring with the join token), only UDP allocations, and
//! only the tenant's media addresses as peers (every other address denied). The secret itself is
//! never in the file: coturn takes it as `--static-auth-secret`, from the Secret.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use bedside_crds::HealthcareTenant;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::BuildError;
use super::config::{RELAY_SECRET_KEY, TLS_DIR, config_hash};
use super::meta::{
    container_resources, metadata, one_file_config_map, one_key_secret,
    restricted_container_security, restricted_pod_security, tls_secret_name, typed,
};
use crate::names::{
    CONFIG_HASH_ANNOTATION, ChildNames, MEDIA_PORT, RELAY_TLS_PORT, default_relay_image,
    selector_labels,
};

/// Where a relay pod reads its turnserver.conf.
pub const RELAY_CONFIG_DIR: &str = "/etc/bedside/relay-config";
pub const RELAY_CONFIG_FILE: &str = "turnserver.conf";
/// TURN over UDP and TCP inside the relay container: not exposed (no Service port), kept
/// because coturn always listens on one.
const RELAY_PLAIN_PORT: u16 = 3478;
/// The relay's UDP ports toward the media nodes: one per relayed participant.
const RELAY_PORTS: RangeInclusive<u16> = 49152..=50175;

/// What shapes one tenant's relay.
#[derive(Debug, Clone)]
pub struct RelayServer {
    /// The tenant's name: coturn's realm, in every credential check.
    pub realm: String,
    /// Where coturn listens and relays from; `None`: every address of the pod.
    pub listen: Option<IpAddr>,
    /// TURN over TLS (the last resort of networks that let only TCP 443 out).
    pub tls_port: u16,
    /// TURN over UDP and plain TCP.
    pub port: u16,
    /// The UDP ports relayed media leaves from.
    pub relay_ports: RangeInclusive<u16>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The tenant's media addresses: the only peers the relay forwards to.
    pub peers: Vec<IpAddr>,
    /// A writable folder for coturn's pid file and its (unused) user database: a relay pod's
    /// root file system is read-only.
    pub run_dir: PathBuf,
}

/// Modern TLS only, AES-GCM suites first (the same bar as the node's signaling).
const CIPHERS: &str = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";

/// coturn's `turnserver.conf` for the relay.
pub fn coturn_config(relay: &RelayServer) -> String {
    let mut conf = format!(
        "# The TURN relay of tenant {realm}, rendered by bedside (docs/media-node.md#turn-relay).\n\
         realm={realm}\n\
         use-auth-secret\n\
         listening-port={port}\n\
         tls-listening-port={tls}\n\
         min-port={min}\n\
         max-port={max}\n\
         cert={cert}\n\
         pkey={key}\n\
         cipher-list=\"{CIPHERS}\"\n\
         no-tlsv1\n\
         no-tlsv1_1\n\
         no-dtls\n\
         no-tcp-relay\n\
         no-multicast-peers\n\
         no-cli\n\
         no-software-attribute\n\
         fingerprint\n\
         log-file=stdout\n\
         simple-log\n\
         pidfile={run}/turnserver.pid\n\
         userdb={run}/turndb\n\
         denied-peer-ip=0.0.0.0-255.255.255.255\n\
         denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n",
        realm = relay.realm,
        port = relay.port,
        tls = relay.tls_port,
        min = relay.relay_ports.start(),
        max = relay.relay_ports.end(),
        cert = relay.cert_file.display(),
        key = relay.key_file.display(),
        run = relay.run_dir.display(),
    );
    if let Some(ip) = relay.listen {
        let _ = writeln!(conf, "listening-ip={ip}\nrelay-ip={ip}");
    }
    for peer in &relay.peers {
        let _ = writeln!(conf, "allowed-peer-ip={peer}");
    }
    // coturn refuses loopback peers outright unless told; only a node on loopback (a test, a
    // laptop) is one.
    if relay.peers.iter().any(IpAddr::is_loopback) {
        conf.push_str("allow-loopback-peers\n");
    }
    conf
}

/// What a tenant's relay is made of: its config, pods, Service and NetworkPolicy.
#[derive(Debug, Clone)]
pub struct RelayObjects {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub network_policy: NetworkPolicy,
}

/// The media pods' load balancer IPs (their `host:port` addresses): the only peers the relay
/// forwards to. An address that is a DNS name (some clouds' load balancers) cannot be pinned
/// and is left out: the relay refuses it.
pub fn relay_peers(addresses: &BTreeMap<String, String>) -> Vec<IpAddr> {
    let mut peers: Vec<IpAddr> = addresses
        .values()
        .filter_map(|a| a.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .collect();
    peers.sort();
    peers.dedup();
    peers
}

/// The relay's shared secret, generated once by the reconciler: owned by the tenant (nothing
/// it protects outlives the visits).
pub fn relay_secret(tenant: &HealthcareTenant, secret: String) -> Result<Secret, BuildError> {
    let name = ChildNames::of(tenant).relay_secret;
    one_key_secret(tenant, &name, RELAY_SECRET_KEY, secret.into_bytes())
}

/// The relay's objects for a tenant with `spec.relay`, forwarding to `peers`; `None` without.
/// Without `media_allowed` (no agreement in force) it runs no pod: a relay carries the visits'
/// media as the media nodes do, and they are stopped too.
pub fn relay_objects(
    tenant: &HealthcareTenant,
    peers: &[IpAddr],
    media_allowed: bool,
) -> Result<Option<RelayObjects>, BuildError> {
    let Some(relay) = tenant.spec.relay.as_ref() else {
        return Ok(None);
    };
    let names = ChildNames::of(tenant);
    let conf = coturn_config(&RelayServer {
        realm: tenant.name_any(),
        listen: None,
        tls_port: RELAY_TLS_PORT as u16,
        port: RELAY_PLAIN_PORT,
        relay_ports: RELAY_PORTS,
        cert_file: format!("{TLS_DIR}/tls.crt").into(),
        key_file: format!("{TLS_DIR}/tls.key").into(),
        peers: peers.to_vec(),
        run_dir: "/tmp".into(),
    });
    let hash = config_hash(&conf);
    let config_map = one_file_config_map(
        relay_metadata(tenant, &names.relay_config)?,
        RELAY_CONFIG_FILE,
        conf,
    )?;
    let resources = container_resources(relay.resources.as_ref());
    let image = relay.image.clone().unwrap_or_else(default_relay_image);
    let replicas = if media_allowed { relay.replicas } else { 0 };
    Ok(Some(RelayObjects {
        config_map,
        deployment: deployment(tenant, &names, (&image, resources, replicas), &hash)?,
        service: service(tenant, &names)?,
        network_policy: network_policy(tenant, &names)?,
    }))
}

/// The labels of the relay's pods, and its selector: not the media pods' (the media
/// StatefulSet, Services and policy must never select a relay pod).
fn relay_selector(tenant: &HealthcareTenant) -> Value {
    json!({
        "app.kubernetes.io/name": "bedside-relay",
        "app.kubernetes.io/instance": tenant.name_any(),
    })
}

/// The tenant's metadata, named as the relay (not as a media node).
fn relay_metadata(tenant: &HealthcareTenant, name: &str) -> Result<Value, BuildError> {
    let mut meta = metadata(tenant, name)?;
    meta["labels"]["app.kubernetes.io/name"] = "bedside-relay".into();
    Ok(meta)
}

fn deployment(
    tenant: &HealthcareTenant,
    names: &ChildNames,
    (image, resources, replicas): (&str, Value, i32),
    hash: &str,
) -> Result<Deployment, BuildError> {
    let tls_secret = tls_secret_name(tenant);
    let mut pod_labels = relay_selector(tenant);
    pod_labels["app.kubernetes.io/part-of"] = "bedside".into();
    let probe = |period: i32| json!({"tcpSocket": {"port": "turns"}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3});
    typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": relay_metadata(tenant, &names.relay)?,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": relay_selector(tenant)},
                // A new relay pod is up before an old one goes: relayed calls move by an ICE
                // restart, never to nothing.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": {CONFIG_HASH_ANNOTATION: hash}},
                    "spec": {
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "securityContext": restricted_pod_security(),
                        "containers": [{
                            "name": "relay",
                            "image": image,
                            // The secret from the Secret, never in the ConfigMap.
                            "args": ["-c", format!("{RELAY_CONFIG_DIR}/{RELAY_CONFIG_FILE}"), "--static-auth-secret=$(RELAY_SECRET)"],
                            "env": [{"name": "RELAY_SECRET", "valueFrom": {"secretKeyRef": {"name": names.relay_secret, "key": RELAY_SECRET_KEY}}}],
                            "ports": [{"name": "turns", "containerPort": RELAY_TLS_PORT, "protocol": "TCP"}],
                            "resources": resources,
                            "readinessProbe": probe(5),
                            "livenessProbe": probe(10),
                            "securityContext": restricted_container_security(),
                            "volumeMounts": [
                                {"name": "config", "mountPath": RELAY_CONFIG_DIR, "readOnly": true},
                                {"name": "tls", "mountPath": TLS_DIR, "readOnly": true},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": names.relay_config}},
                            {"name": "tls", "secret": {"secretName": tls_secret}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                        ],
                    },
                },
            },
        }),
    )
}

/// TURN over TLS on 443, behind a load balancer of its own: the one port a locked-down
/// network lets out.
fn service(tenant: &HealthcareTenant, names: &ChildNames) -> Result<Service, BuildError> {
    typed(
        "Service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": relay_metadata(tenant, &names.relay)?,
            "spec": {
                "type": "LoadBalancer",
                "selector": relay_selector(tenant),
                "ports": [{"name": "turns", "port": 443, "targetPort": "turns", "protocol": "TCP"}],
            },
        }),
    )
}

/// In: TURN over TLS from anywhere. Out: the media nodes' UDP port and nothing else (no DNS:
/// coturn needs none), so even a relay tricked past its peer list reaches nothing more.
fn network_policy(
    tenant: &HealthcareTenant,
    names: &ChildNames,
) -> Result<NetworkPolicy, BuildError> {
    typed(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": relay_metadata(tenant, &names.relay)?,
            "spec": {
                "podSelector": {"matchLabels": relay_selector(tenant)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"ports": [{"protocol": "TCP", "port": RELAY_TLS_PORT}]}],
                "egress": [{
                    "to": [{"podSelector": {"matchLabels": selector_labels(tenant)}}],
                    "ports": [{"protocol": "UDP", "port": MEDIA_PORT}],
                }],
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(peers: &[&str]) -> RelayServer {
        RelayServer {
            realm: "mercy".into(),
            listen: None,
            tls_port: 443,
            port: 3478,
            relay_ports: 49152..=49407,
            cert_file: "/etc/bedside/tls/tls.crt".into(),
            key_file: "/etc/bedside/tls/tls.key".into(),
            peers: peers.iter().map(|p| p.parse().expect("ip")).collect(),
            run_dir: "/tmp".into(),
        }
    }

    #[test]
    fn every_peer_is_denied_but_the_tenants_media_addresses() {
        let conf = coturn_config(&relay(&["203.0.113.7", "203.0.113.8"]));
        let lines: Vec<&str> = conf.lines().collect();
        for line in [
            "realm=mercy",
            "use-auth-secret",
            "tls-listening-port=443",
            "no-tcp-relay",
            "denied-peer-ip=0.0.0.0-255.255.255.255",
            "allowed-peer-ip=203.0.113.7",
            "allowed-peer-ip=203.0.113.8",
        ] {
            assert!(lines.contains(&line), "{line} in\n{conf}");
        }
        assert!(!conf.contains("allow-loopback-peers"), "{conf}");
        assert!(
            !conf.contains("static-auth-secret"),
            "the secret stays out of the file"
        );
    }

    fn mercy_with_relay() -> HealthcareTenant {
        let mut mercy = crate::build::objects_tests_tenant("mercy-clinic.yaml");
        mercy.spec.relay = Some(bedside_crds::tenant::Relay {
            hostname: "relay.meet.mercy.example".into(),
            image: None,
            replicas: 1,
            resources: None,
        });
        mercy
    }

    fn peers() -> Vec<IpAddr> {
        vec![
            "203.0.113.7".parse().expect("ip"),
            "203.0.113.8".parse().expect("ip"),
        ]
    }

    #[test]
    fn a_tenant_without_a_relay_gets_none_and_its_media_nodes_hand_none_out() {
        let mercy = crate::build::objects_tests_tenant("mercy-clinic.yaml");
        assert!(
            relay_objects(&mercy, &peers(), true)
                .expect("build")
                .is_none()
        );
        assert_eq!(
            crate::build::config::node_config(&mercy).network.relay,
            None
        );
    }

    #[test]
    fn without_an_agreement_in_force_the_relay_runs_no_pod() {
        let replicas = |media_allowed| {
            relay_objects(&mercy_with_relay(), &peers(), media_allowed)
                .expect("build")
                .expect("relay")
                .deployment
                .spec
                .and_then(|s| s.replicas)
        };
        assert_eq!(replicas(true), Some(1));
        assert_eq!(replicas(false), Some(0));
    }

    #[test]
    fn the_relay_pod_is_restricted_and_gets_its_secret_only_from_the_secret() {
        let objects = relay_objects(&mercy_with_relay(), &peers(), true)
            .expect("build")
            .expect("relay");
        let pod = objects.deployment.spec.expect("spec").template;
        let labels = pod.metadata.expect("meta").labels.expect("labels");
        let media = selector_labels(&mercy_with_relay());
        assert!(
            !media.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "the media selector must not pick a relay pod: {labels:?}"
        );
        let pod = pod.spec.expect("pod");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let security = pod.security_context.expect("pod security");
        assert_eq!(security.run_as_non_root, Some(true));
        let container = &pod.containers[0];
        let c = container
            .security_context
            .clone()
            .expect("container security");
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(
            c.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            c.seccomp_profile.map(|p| p.type_),
            Some("RuntimeDefault".into())
        );
        let args = container.args.clone().unwrap_or_default().join(" ");
        assert!(
            args.contains("--static-auth-secret=$(RELAY_SECRET)"),
            "{args}"
        );
        let env = serde_json::to_string(&container.env).expect("json");
        assert!(env.contains("mercy-clinic-relay-secret"), "{env}");
        let conf = &objects.config_map.data.expect("data")[RELAY_CONFIG_FILE];
        assert!(!conf.contains("static-auth-secret"), "{conf}");
        for line in [
            "allowed-peer-ip=203.0.113.7",
            "allowed-peer-ip=203.0.113.8",
            "tls-listening-port=5349",
            "realm=mercy-clinic",
            "pidfile=/tmp/turnserver.pid",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} in\n{conf}");
        }
    }

    #[test]
    fn the_relay_listens_on_443_only_and_reaches_only_the_media_nodes_udp_port() {
        let mercy = mercy_with_relay();
        let objects = relay_objects(&mercy, &peers(), true)
            .expect("build")
            .expect("relay");
        let service = objects.service.spec.expect("spec");
        assert_eq!(service.type_.as_deref(), Some("LoadBalancer"));
        let ports: Vec<(String, i32)> = service
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.protocol.unwrap_or_default(), p.port))
            .collect();
        assert_eq!(ports, [("TCP".to_string(), 443)]);
        let policy = serde_json::to_value(objects.network_policy.spec).expect("json");
        assert_eq!(policy["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            policy["egress"],
            json!([{
                "to": [{"podSelector": {"matchLabels": selector_labels(&mercy)}}],
                "ports": [{"protocol": "UDP", "port": MEDIA_PORT}],
            }])
        );
        assert_eq!(
            policy["ingress"],
            json!([{"ports": [{"protocol": "TCP", "port": RELAY_TLS_PORT}]}])
        );
    }

    #[test]
    fn the_media_nodes_hand_out_the_relay_and_the_certificate_covers_its_name() {
        let mercy = mercy_with_relay();
        let relay = crate::build::config::node_config(&mercy)
            .network
            .relay
            .expect("relay");
        assert_eq!(
            relay.urls,
            ["turns:relay.meet.mercy.example:443?transport=tcp"]
        );
        assert!(relay.problems().is_empty(), "{:?}", relay.problems());
        let pod = serde_json::to_string(
            &crate::build::desired(
                &mercy,
                crate::build::BuildInputs {
                    media_allowed: true,
                    operator_namespace: None,
                    mixed_protocol_load_balancers: true,
                },
            )
            .expect("build")
            .media_nodes,
        )
        .expect("json");
        assert!(
            pod.contains("\"mountPath\":\"/etc/bedside/relay\""),
            "{pod}"
        );
        let certificate = crate::build::certificate(&mercy)
            .expect("build")
            .expect("issuerRef");
        assert_eq!(
            certificate.spec.dns_names,
            Some(vec![
                "meet.mercy.example".into(),
                "relay.meet.mercy.example".into()
            ])
        );
    }

    #[test]
    fn only_load_balancer_ips_are_peers_once_each() {
        let addresses = BTreeMap::from([
            ("m-0".to_string(), "203.0.113.8:3478".to_string()),
            ("m-1".to_string(), "203.0.113.7:3478".to_string()),
            ("m-2".to_string(), "203.0.113.7:3478".to_string()),
            ("m-3".to_string(), "lb-1.elb.example:3478".to_string()),
        ]);
        assert_eq!(relay_peers(&addresses), peers());
    }

    #[test]
    fn a_node_on_loopback_is_the_only_case_that_allows_loopback_peers() {
        let conf = coturn_config(&relay(&["127.0.0.1"]));
        assert!(conf.lines().any(|l| l == "allow-loopback-peers"), "{conf}");
    }
}
