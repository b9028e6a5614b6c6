//! Desired state: plain functions from a tenant to the objects it needs. No client here; the
//! reconciler diffs, applies and reports.

pub mod access;
pub mod addresses;
pub mod config;
mod meta;
pub(crate) use meta::{metadata, tls_secret_name};
pub(crate) mod objects;
pub mod relay;
pub mod storage;

pub use access::{MediaAccess, media_access};
pub use addresses::{
    MediaAddresses, addresses_config_map, has_tcp_media_port, load_balancer_address,
    media_addresses, tcp_node_port_pin, without_tcp_media_port,
};
#[cfg(test)]
pub(crate) use objects::tests::tenant as objects_tests_tenant;
pub use objects::{
    api_secret, certificate, keys_secret, pod_disruption_budget, service_monitor,
    spec_dependent_volume,
};

use bedside_crds::HealthcareTenant;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;

/// What the reconciler learned from the cluster and the clock that shapes the objects.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    /// False while the BAA is not in force: media nodes are scaled to 0.
    pub media_allowed: bool,
    /// The operator's namespace: its pods may ask the media nodes about their audit sinks.
    pub operator_namespace: Option<String>,
    /// Whether the API server takes a LoadBalancer Service with both UDP and TCP ports (probed
    /// at start-up): then a load-balanced pod also takes ICE-TCP at its address.
    pub mixed_protocol_load_balancers: bool,
}

/// Every object the operator applies for a tenant (the key Secret and the PDB, whose shape
/// depends on the server, are built separately).
#[derive(Debug, Clone)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub config_hash: String,
    pub media_nodes: StatefulSet,
    pub services: Vec<Service>,
    pub network_policy: NetworkPolicy,
    pub access: MediaAccess,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("tenant has no namespace; HealthcareTenant is a namespaced resource")]
    NoNamespace,
    #[error("built an invalid {kind} (a bug in bedside-operator): {source}")]
    Invalid {
        kind: &'static str,
        source: serde_json::Error,
    },
}

pub fn desired(tenant: &HealthcareTenant, inputs: BuildInputs) -> Result<Desired, BuildError> {
    objects::desired(tenant, inputs)
}
