//! Where browsers reach each media pod: read off the pod's own media Service as the API server
//! returned it (a node port is allocated when the Service is created; a load balancer's
//! address arrives later in its status). Pure: the reconciler passes the Services in.

use std::collections::BTreeMap;

use bedside_crds::HealthcareTenant;
use bedside_crds::tenant::MediaServiceType;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort};
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
            let port = media_port(service, "UDP")
                .and_then(|p| p.node_port)
                .ok_or_else(|| format!("Service {pod} has no node port yet"))?;
            Ok(host_port(host, port))
        }
        MediaServiceType::LoadBalancer => {
            let host = load_balancer_address(service).ok_or_else(|| {
                format!("waiting for the load balancer to give Service {pod} an address")
            })?;
            Ok(host_port(&host, MEDIA_PORT))
        }
    }
}

/// The address a Service's load balancer gave it (its IP, else its hostname), once it has one.
pub fn load_balancer_address(service: &Service) -> Option<String> {
    let ingress = service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    ingress.ip.clone().or_else(|| ingress.hostname.clone())
}

/// Whether `port` is the media port for `protocol` ("UDP", or "TCP" for ICE-TCP).
fn is_media(port: &ServicePort, protocol: &str) -> bool {
    port.port == MEDIA_PORT && port.protocol.as_deref() == Some(protocol)
}

fn media_port<'a>(service: &'a Service, protocol: &str) -> Option<&'a ServicePort> {
    service
        .spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| is_media(p, protocol))
}

/// Whether a media Service carries ICE-TCP beside UDP.
pub fn has_tcp_media_port(service: &Service) -> bool {
    media_port(service, "TCP").is_some()
}

/// The same Service with UDP media only, for a cluster that refuses mixed-protocol load
/// balancers.
pub fn without_tcp_media_port(service: &Service) -> Service {
    let mut udp_only = service.clone();
    if let Some(ports) = udp_only.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        ports.retain(|p| !is_media(p, "TCP"));
    }
    udp_only
}

/// A merge patch that gives a NodePort media Service's TCP port the UDP port's node port,
/// when they differ: the pod advertises one address for both. The API server allocates one
/// number for both when it creates the Service, but a TCP port added to a Service made before
/// ICE-TCP gets a number of its own.
pub fn tcp_node_port_pin(service: &Service) -> Option<serde_json::Value> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("NodePort") {
        return None;
    }
    let udp = media_port(service, "UDP")?.node_port?;
    if media_port(service, "TCP")?.node_port == Some(udp) {
        return None;
    }
    let mut ports = spec.ports.clone()?;
    for port in ports.iter_mut().filter(|p| is_media(p, "TCP")) {
        port.node_port = Some(udp);
    }
    Some(json!({"spec": {"ports": ports}}))
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

    fn both_protocols(type_: &str, udp: i32, tcp: i32) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "mercy-clinic-media-0"},
            "spec": {"type": type_, "ports": [
                {"name": "media-tcp", "port": 3478, "protocol": "TCP", "nodePort": tcp},
                {"name": "media", "port": 3478, "protocol": "UDP", "nodePort": udp},
            ]},
        }))
        .expect("service")
    }

    #[test]
    fn a_pod_advertises_its_udp_node_port_and_its_tcp_port_is_pinned_to_the_same_number() {
        let mut mercy = tenant("mercy-clinic.yaml");
        mercy.spec.media_nodes.service_type = MediaServiceType::NodePort;
        mercy.spec.media_nodes.public_address = Some("198.51.100.4".into());
        // A Service made before ICE-TCP: its new TCP port got a number of its own.
        let upgraded = both_protocols("NodePort", 31001, 31777);
        let found = media_addresses(&mercy, 1, std::slice::from_ref(&upgraded));
        assert_eq!(found.by_pod["mercy-clinic-media-0"], "198.51.100.4:31001");
        let patch = tcp_node_port_pin(&upgraded).expect("a pin");
        assert_eq!(
            patch["spec"]["ports"],
            json!([
                {"name": "media-tcp", "port": 3478, "protocol": "TCP", "nodePort": 31001},
                {"name": "media", "port": 3478, "protocol": "UDP", "nodePort": 31001},
            ]),
            "the whole list, both ports kept"
        );
        assert_eq!(
            tcp_node_port_pin(&both_protocols("NodePort", 31001, 31001)),
            None
        );
        // Behind a load balancer both reach the pod on port 3478 whatever the node ports.
        assert_eq!(
            tcp_node_port_pin(&both_protocols("LoadBalancer", 31001, 31777)),
            None
        );
        let udp_only = without_tcp_media_port(&upgraded);
        assert!(has_tcp_media_port(&upgraded) && !has_tcp_media_port(&udp_only));
        assert_eq!(tcp_node_port_pin(&udp_only), None);
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
