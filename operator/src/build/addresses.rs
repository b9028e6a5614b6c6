//! Where browsers reach each media pod: read off the pod's own media Service as the API server
//! returned it (a node port is allocated when the Service is created; a load balancer's
//! address arrives later in its status). Pure: the reconciler passes the Services in.

use std::collections::BTreeMap;

use bedside_crds::HealthcareTenant;
use bedside_crds::tenant::MediaServiceType;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use serde_json::json;

use super::BuildError;
use crate::names::{ChildNames, MEDIA_PORT};

/// Each media pod's advertised `host:port`, and why any pod has none yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaAddresses {
    pub by_pod: BTreeMap<String, String>,
    /// One sentence per pod without an address, naming what to do (for the status).
    pub missing: Vec<String>,
}

/// The addresses of pods `0..replicas`, from their Services (missing Services count as not
/// yet created).
pub fn media_addresses(
    tenant: &HealthcareTenant,
    replicas: i32,
    services: &[Service],
) -> MediaAddresses {
    let names = ChildNames::of(tenant);
    let mut found = MediaAddresses::default();
    for ordinal in 0..replicas {
        let pod = names.media_pod(ordinal);
        let service = services.iter().find(|s| s.name_any() == pod);
        match address_of(tenant, &pod, service) {
            Ok(address) => {
                found.by_pod.insert(pod, address);
            }
            Err(why) => found.missing.push(why),
        }
    }
    found
}

fn address_of(
    tenant: &HealthcareTenant,
    pod: &str,
    service: Option<&Service>,
) -> Result<String, String> {
    let service = service.ok_or_else(|| format!("Service {pod} is not created yet"))?;
    match tenant.spec.media_nodes.service_type {
        MediaServiceType::NodePort => {
            let host = tenant.spec.media_nodes.public_address.as_deref().ok_or_else(|| {
                "serviceType NodePort needs spec.mediaNodes.publicAddress: the IP or DNS name at \
                 which browsers reach the cluster's nodes"
                    .to_string()
            })?;
            let port = service
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .and_then(|p| p.first())
                .and_then(|p| p.node_port)
                .ok_or_else(|| format!("Service {pod} has no node port yet"))?;
            Ok(host_port(host, port))
        }
        MediaServiceType::LoadBalancer => {
            let ingress = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|i| i.first());
            let host = ingress
                .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                .ok_or_else(|| {
                    format!("waiting for the load balancer to give Service {pod} an address")
                })?;
            Ok(host_port(&host, MEDIA_PORT))
        }
    }
}

fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The ConfigMap the media pods mount: a key per pod, its address as the value.
pub fn addresses_config_map(
    tenant: &HealthcareTenant,
    addresses: &MediaAddresses,
) -> Result<ConfigMap, BuildError> {
    let names = ChildNames::of(tenant);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": super::meta::metadata(tenant, &names.addresses)?,
        "data": addresses.by_pod,
    }))
    .map_err(|source| BuildError::Invalid {
        kind: "ConfigMap",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::objects::tests::tenant;

    fn service(name: &str, node_port: Option<i32>, ingress: Option<serde_json::Value>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"port": 3478, "protocol": "UDP", "nodePort": node_port}]},
            "status": {"loadBalancer": {"ingress": ingress.map(|i| vec![i])}},
        }))
        .expect("service")
    }

    #[test]
    fn node_port_pods_advertise_the_public_address_with_their_own_port() {
        let mut mercy = tenant("mercy-clinic.yaml");
        mercy.spec.media_nodes.service_type = MediaServiceType::NodePort;
        mercy.spec.media_nodes.public_address = Some("198.51.100.4".into());
        let services = [
            service("mercy-clinic-media-0", Some(31001), None),
            service("mercy-clinic-media-1", Some(31002), None),
        ];
        let found = media_addresses(&mercy, 3, &services);
        assert_eq!(found.by_pod["mercy-clinic-media-0"], "198.51.100.4:31001");
        assert_eq!(found.by_pod["mercy-clinic-media-1"], "198.51.100.4:31002");
        assert_eq!(
            found.missing,
            ["Service mercy-clinic-media-2 is not created yet"]
        );
    }

    #[test]
    fn a_node_port_tenant_without_a_public_address_is_told_to_set_one() {
        let mut mercy = tenant("mercy-clinic.yaml");
        mercy.spec.media_nodes.service_type = MediaServiceType::NodePort;
        let found = media_addresses(
            &mercy,
            1,
            &[service("mercy-clinic-media-0", Some(31001), None)],
        );
        assert!(found.by_pod.is_empty());
        assert!(
            found.missing[0].contains("spec.mediaNodes.publicAddress"),
            "{found:?}"
        );
    }

    #[test]
    fn load_balancer_pods_advertise_their_own_ip_or_hostname_never_a_shared_one() {
        let mercy = tenant("mercy-clinic.yaml");
        let services = [
            service(
                "mercy-clinic-media-0",
                None,
                Some(json!({"ip": "203.0.113.10"})),
            ),
            service(
                "mercy-clinic-media-1",
                None,
                Some(json!({"hostname": "lb-1.example.net"})),
            ),
            service(
                "mercy-clinic-media-2",
                None,
                Some(json!({"ip": "2001:db8::5"})),
            ),
            service("mercy-clinic-media-3", None, None),
        ];
        let found = media_addresses(&mercy, 4, &services);
        assert_eq!(found.by_pod["mercy-clinic-media-0"], "203.0.113.10:3478");
        assert_eq!(
            found.by_pod["mercy-clinic-media-1"],
            "lb-1.example.net:3478"
        );
        assert_eq!(found.by_pod["mercy-clinic-media-2"], "[2001:db8::5]:3478");
        assert!(found.missing[0].contains("load balancer"), "{found:?}");
    }
}
