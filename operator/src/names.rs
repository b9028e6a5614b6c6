//! Names, labels and other constants the operator's objects share, named once.

use std::collections::BTreeMap;

use bedside_crds::HealthcareTenant;
use kube::ResourceExt;

/// The one field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "bedside-operator";
/// Runs before a tenant is deleted: records the deprovisioning, then lets GC remove children.
pub const FINALIZER: &str = "bedside.health/deprovision";
/// Pod-template annotation holding the rendered config's hash: a config change rolls the pods,
/// and nothing else (an operator upgrade that renders the same config) does.
pub const CONFIG_HASH_ANNOTATION: &str = "bedside.health/config-hash";
pub use bedside_crds::leases::TENANT_LABEL;
/// Which of a tenant's Services this is: signaling, media or metrics.
pub const SERVICE_ROLE_LABEL: &str = "bedside.health/service";
pub const CONFIG_FILE: &str = "config.yaml";
/// On the keys Secret: the uid of the tenant the operator made it for. The Secret outlives its
/// tenant (the audit key verifies six years of records), so no owner reference ties them; this
/// is how the operator knows the Secret is its own and whose.
pub const KEYS_OF_ANNOTATION: &str = "bedside.health/keys-of-tenant";
/// The label a StatefulSet puts on each of its pods: a per-pod Service selects by it.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// Ports inside the media-node container.
pub const SIGNALING_PORT: i32 = 8443;
pub const MEDIA_PORT: i32 = 3478;
pub const METRICS_PORT: i32 = 9090;

/// Image used when the tenant names none: the media node of the operator's own release.
pub fn default_image() -> String {
    format!(
        "ghcr.io/bedside-health/bedside-media-node:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The relay's TURN-over-TLS port inside its container (unprivileged); its Service takes 443.
pub const RELAY_TLS_PORT: i32 = 5349;

/// The relay image used when the tenant names none: coturn, packed for the operator's release
/// (docs/install.md#turn-relay says how, with the entrypoint `turnserver`).
pub fn default_relay_image() -> String {
    format!(
        "ghcr.io/bedside-health/bedside-relay:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Child object names, `<tenant>-<part>`; the CRD caps tenant names so these fit 63 characters.
#[derive(Debug, Clone)]
pub struct ChildNames {
    pub config: String,
    pub keys: String,
    /// The StatefulSet; its pods are `<media_nodes>-<ordinal>`.
    pub media_nodes: String,
    /// The ConfigMap mapping each media pod to the address it advertises.
    pub addresses: String,
    pub signaling: String,
    pub metrics: String,
    pub network_policy: String,
    pub disruption_budget: String,
    pub certificate_secret: String,
    /// The media pods' ServiceAccount.
    pub media_account: String,
    /// The Role (and its binding) that lets the media pods place rooms.
    pub placement: String,
    /// The visits API's credentials.
    pub api_credentials: String,
    /// The TURN relay's Deployment, Service and NetworkPolicy.
    pub relay: String,
    /// The relay's turnserver.conf.
    pub relay_config: String,
    /// The secret the relay shares with the media nodes (per-join TURN credentials).
    pub relay_secret: String,
    /// The live compliance evidence (an openreports.io Report).
    pub compliance_report: String,
}

impl ChildNames {
    pub fn of(tenant: &HealthcareTenant) -> Self {
        let t = tenant.name_any();
        Self {
            config: format!("{t}-media-config"),
            keys: format!("{t}-keys"),
            media_nodes: format!("{t}-media"),
            addresses: format!("{t}-media-addresses"),
            signaling: format!("{t}-signaling"),
            metrics: format!("{t}-metrics"),
            network_policy: format!("{t}-media"),
            disruption_budget: format!("{t}-media"),
            certificate_secret: format!("{t}-tls"),
            media_account: format!("{t}-media"),
            placement: format!("{t}-media-placement"),
            api_credentials: format!("{t}-api"),
            relay: format!("{t}-relay"),
            relay_config: format!("{t}-relay-config"),
            relay_secret: format!("{t}-relay-secret"),
            compliance_report: format!("{t}-hipaa"),
        }
    }

    /// The media pod with this ordinal; its own media Service has the same name.
    pub fn media_pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.media_nodes)
    }
}

/// The `app.kubernetes.io/*` set plus the tenant label, on every child.
pub fn labels(tenant: &HealthcareTenant) -> BTreeMap<String, String> {
    let mut labels = selector_labels(tenant);
    labels.insert("app.kubernetes.io/part-of".into(), "bedside".into());
    labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    labels.insert(
        "app.kubernetes.io/version".into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    labels
}

/// Labels for media-node pods: the full set minus the version, so upgrading the operator does
/// not change the pod template.
pub fn pod_labels(tenant: &HealthcareTenant) -> BTreeMap<String, String> {
    let mut labels = labels(tenant);
    labels.remove("app.kubernetes.io/version");
    labels
}

/// The subset that selects a tenant's media-node pods; never changes, as selectors are immutable.
pub fn selector_labels(tenant: &HealthcareTenant) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "bedside-media-node".into()),
        ("app.kubernetes.io/instance".into(), tenant.name_any()),
        (TENANT_LABEL.into(), tenant.name_any()),
    ])
}
