//! Properties over any tenant the API server would admit: the operator renders a config every
//! media node accepts, renders it the same way twice (no rollout without a change), and finds
//! no drift between what it wants and that same state read back.

use proptest::prelude::*;
use serde_json::{Value, json};

use bedside_crds::validation::TenantValidator;
use bedside_crds::{HealthcareTenant, MediaNodeConfig};

use crate::build::{BuildInputs, desired};
use crate::names::CONFIG_FILE;
use crate::reconcile::drift::{self, Live};

/// Go durations around the bounds the CRD sets (idle 1m to 15m, meetings 15m to 24h).
fn duration(minutes: std::ops::Range<u32>) -> impl Strategy<Value = String> {
    let (low, high) = (minutes.start, minutes.end);
    prop_oneof![
        4 => (low..high).prop_map(|m| format!("{m}m")),
        2 => (low * 60..high * 60).prop_map(|s| format!("{s}s")),
        2 => (low / 60..high / 60 + 1, 0u32..60).prop_map(|(h, m)| format!("{h}h{m}m")),
        1 => (0u32..2000).prop_map(|m| format!("{m}m")),
    ]
}

/// Sinks, mostly of the shapes the CRD admits (host:port, https, Secret names), some not.
fn sink() -> impl Strategy<Value = Value> {
    let secret = prop_oneof![9 => "[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?", 1 => "[a-z0-9-]{0,20}"];
    let address = prop_oneof![
        9 => "([a-z]([a-z0-9-]{0,12}[a-z0-9])?\\.){0,3}[a-z]{2,5}:[0-9]{1,5}",
        1 => "\\[[0-9a-f:]{2,20}\\]:[0-9]{1,5}",
        1 => "[a-z0-9.:-]{1,30}",
    ];
    let url = prop_oneof![
        9 => "https://[a-z0-9.-]{1,30}(:[0-9]{1,5})?(/[a-z]{0,10}){0,3}",
        1 => "(https?)://[^ ]{0,30}",
    ];
    prop_oneof![
        Just(json!({"stdout": {}})),
        (address, secret.clone())
            .prop_map(|(address, ca)| json!({"syslog": {"address": address, "caSecret": ca}})),
        (url, secret)
            .prop_map(|(url, token)| json!({"webhook": {"url": url, "tokenSecret": token}})),
    ]
}

prop_compose! {
    fn meetings()(
        idle in duration(1..16),
        max in duration(15..1441),
        participants in prop_oneof![9 => 2u32..101, 1 => 0u32..200],
        e2e in any::<bool>(),
    ) -> Value {
        json!({
            "idleTimeout": idle, "maxDuration": max, "maxParticipants": participants,
            "mediaEncryption": if e2e { "EndToEnd" } else { "Required" },
        })
    }
}

prop_compose! {
    fn media_nodes()(
        replicas in prop_oneof![9 => 1i32..21, 1 => -1i32..25],
        node_port in any::<bool>(),
        address in proptest::option::of("[a-z0-9.:-]{1,30}"),
        cpu in proptest::option::of(prop_oneof![Just("500m"), Just("1"), Just("2"), Just("4")]),
    ) -> Value {
        let mut nodes = json!({
            "replicas": replicas,
            "serviceType": if node_port { "NodePort" } else { "LoadBalancer" },
        });
        if let Some(address) = address {
            nodes["publicAddress"] = json!(address);
        }
        if let Some(cpu) = cpu {
            nodes["resources"] = json!({"limits": {"cpu": cpu, "memory": "1Gi"}});
        }
        nodes
    }
}

prop_compose! {
    fn tenant()(
        name in prop_oneof![9 => "[a-z]([a-z0-9-]{0,30}[a-z0-9])?", 1 => "[a-z][a-z0-9.-]{0,40}"],
        namespace in "[a-z][a-z0-9-]{0,20}",
        display in "\\PC{0,60}",
        meetings in meetings(),
        nodes in media_nodes(),
        sinks in proptest::collection::vec(sink(), 1..4),
        no_sink in proptest::bool::weighted(0.05),
        retention in prop_oneof![9 => 2190u32..36_501, 1 => 0u32..40_000],
        buffer in prop_oneof![9 => 16u32..16_385, 1 => 0u32..20_000],
        keep_serving in any::<bool>(),
        storage in any::<bool>(),
    ) -> Value {
        let sinks = if no_sink { Vec::new() } else { sinks };
        let mut audit = json!({
            "retentionDays": retention, "sinks": sinks, "bufferMiB": buffer,
            "whenBufferFull": if keep_serving { "KeepServing" } else { "RefuseJoins" },
        });
        if storage {
            audit["storage"] = json!({});
        }
        json!({
            "apiVersion": "bedside.health/v1alpha1", "kind": "HealthcareTenant",
            "metadata": {"name": name, "namespace": namespace, "uid": "uid-1"},
            "spec": {
                "displayName": display,
                "baa": {"reference": "BAA-1", "signedOn": "2026-01-15"},
                "meetings": meetings, "mediaNodes": nodes,
                "tls": {"issuerRef": {"name": "hospital-ca", "kind": "ClusterIssuer"}, "dnsNames": ["meet.example.org"]},
                "audit": audit,
            },
        })
    }
}

fn config_text(
    tenant: &HealthcareTenant,
) -> Result<(crate::build::Desired, String), TestCaseError> {
    let desired = desired(
        tenant,
        BuildInputs {
            media_allowed: true,
            operator_namespace: Some("bedside-system".into()),
            mixed_protocol_load_balancers: true,
        },
    )
    .map_err(|e| TestCaseError::fail(format!("an admitted tenant did not build: {e}")))?;
    let text = desired
        .config_map
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_FILE))
        .cloned()
        .ok_or_else(|| TestCaseError::fail("no config in the ConfigMap"))?;
    Ok((desired, text))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_global_rejects: 20_000, ..ProptestConfig::default() })]
    #[test]
    fn every_admitted_tenant_renders_a_config_the_node_accepts_and_no_drift_against_itself(
        object in tenant(),
    ) {
        thread_local! {
            static VALIDATOR: TenantValidator = TenantValidator::new().expect("the CRD's rules compile");
        }
        let admitted = VALIDATOR.with(|v| v.validate(&object).is_empty());
        // What the API server refuses never reaches the operator.
        prop_assume!(admitted);
        let tenant: HealthcareTenant = serde_json::from_value(object)
            .map_err(|e| TestCaseError::fail(format!("admitted but not readable: {e}")))?;
        let (desired, text) = config_text(&tenant)?;
        let config = MediaNodeConfig::from_yaml(&text);
        prop_assert!(config.is_ok(), "the node refuses the rendered config: {config:?}\n{text}");
        let (_, again) = config_text(&tenant)?;
        prop_assert_eq!(&again, &text, "the same tenant renders the same config");
        let live = Live {
            config_map: Some(desired.config_map.clone()),
            media_nodes: Some(desired.media_nodes.clone()),
            services: desired.services.iter().cloned().map(Some).collect(),
        };
        for spec_changed in [false, true] {
            let found = drift::find(&live, &desired, true, spec_changed);
            prop_assert!(found.is_empty(), "drift of the desired state against itself: {found:?}");
        }
    }
}
