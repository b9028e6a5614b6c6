//! Emergency access (45 CFR 164.312(a)(2)(ii)) against a real API server with the real
//! BreakGlass CRD, the operator, a media node process sharing the tenant's leases (as a pod
//! does) and a real rsyslog as the tenant's sink:
//!
//! - the CRD's own rules refuse a time to live over an hour and a missing reason;
//! - a request that needs approval gives no link until a second person approves;
//! - approved, the clinician's emergency link enters the visit at once, past the lock, the
//!   waiting room and the passcode, which still hold for everyone else; the link works for its
//!   clinician and visit only;
//! - revoked, the clinician leaves the visit, told why, and the link is refused; a grant of one
//!   minute expires by itself;
//! - every step is in the tenant's audit trail with its own action, and the operator's metric
//!   (which the alert reads) says a grant is active.

use std::time::Duration;

use bedside_crds::break_glass::BreakGlass;
use bedside_crds::join::{JoinClaims, Role};
use bedside_tests::media::{Signal, TestNode, workspace_binary};
use bedside_tests::operator::{
    RunningOperator, create_lakeside_tenant, ensure_namespace, eventually, install_crd, tenant_key,
};
use bedside_tests::rsyslog::{self, Rsyslog};
use bedside_tests::{ClusterOptions, TestCluster};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NS: &str = "tenant-break-glass";
const TENANT: &str = "lakeside-behavioral";
const VISIT: &str = "visit-5e1f0c2a";
/// Generous: the whole suite runs beside it on 2 cores.
const WAIT: Duration = Duration::from_secs(60);

fn break_glass(name: &str, ttl_minutes: u32, approval: bool) -> Value {
    json!({
        "apiVersion": "bedside.health/v1alpha1", "kind": "BreakGlass",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "tenant": TENANT, "visit": VISIT,
            "clinician": "Practitioner/dr-9", "requestedBy": "Practitioner/dr-9",
            "reason": "the host dropped out while the patient reported chest pain",
            "incident": "INC-2041", "ttlMinutes": ttl_minutes, "approvalRequired": approval,
        },
    })
}

async fn phase(api: &Api<BreakGlass>, name: &str, wanted: &str) -> BreakGlass {
    eventually(&format!("BreakGlass {name} {wanted}"), WAIT, || async {
        api.get(name).await.ok().filter(|bg| {
            bg.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.as_str() == wanted)
        })
    })
    .await
}

fn condition(bg: &BreakGlass, type_: &str) -> (String, String) {
    bg.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

/// The sink's records of `action` (JSON lines).
fn records(lines: &[String], action: &str) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["action"] == action)
        .collect()
}

async fn emergency_join(node: &TestNode, room: &str, token: &str) -> (Signal, Value) {
    let mut s = Signal::connect(node).await;
    s.send(json!({"v": 1, "type": "join", "room": room, "token": token,
        "displayName": "Dr Nine"}))
        .await;
    let reply = s.recv().await.expect("a reply to join");
    (s, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_link_works_only_while_its_grant_is_active_for_its_clinician_and_visit() {
    if !bedside_tests::run_or_skip("rsyslog", rsyslog::unavailable(), "BEDSIDE_REQUIRE_TOOLS") {
        return;
    }
    let Some(cluster) = TestCluster::start_or_skip(ClusterOptions::default()).await else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    install_crd(&cluster).await.expect("install the CRDs");
    ensure_namespace(&cluster, NS).await.expect("namespace");
    let sink_dir = tempfile::tempdir().expect("tempdir");
    let sink = Rsyslog::start(sink_dir.path()).await;
    let ca = std::fs::read_to_string(&sink.ca_file).expect("ca");
    let sinks = json!([
        {"syslog": {"address": format!("127.0.0.1:{}", sink.port), "caSecret": "siem-ca"}},
    ]);
    create_lakeside_tenant(&cluster, NS, &ca, sinks).await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), NS);
    let operator = RunningOperator::start(&cluster, "op-break-glass", false)
        .await
        .expect("operator");

    // A media node of the tenant (its key, its leases), as a pod runs it.
    let key = tenant_key(&cluster, NS, TENANT, "join-token.key").await;
    let material = bedside_media_node::node::NodeSetup {
        join_key: key.clone(),
        ..bedside_media_node::node::NodeSetup::generated(
            bedside_media_node::config::dev_default(),
            "lakeside-behavioral-media-0".into(),
        )
        .expect("node material")
    };
    let env = [
        ("POD_NAMESPACE", std::ffi::OsStr::new(NS)),
        ("POD_IP", std::ffi::OsStr::new("127.0.0.1")),
        ("KUBECONFIG", cluster.kubeconfig().as_os_str()),
    ];
    let dir = tempfile::tempdir().expect("dir");
    let mut node = TestNode::spawn_in_env(
        &workspace_binary("bedside-media-node"),
        dir.path(),
        &material,
        "info",
        &env,
        |c| c.tenant.name = TENANT.into(),
    )
    .await;
    let node_records = || {
        std::fs::read_to_string(dir.path().join("stdout.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // The visit: its host locked it and is gone; the patient waits for a host.
    let passcode = node.passcode(VISIT);
    // The node takes visits once its own lease is in its placement cache.
    let host_token = node.token(VISIT, "practitioner.dr-7", Role::Host);
    let (mut host, joined) = eventually("the node taking visits", WAIT, || async {
        let mut host = Signal::connect(&node).await;
        let joined = host.join_with(VISIT, &host_token, Some(&passcode)).await;
        (joined["code"] != "not-available").then_some((host, joined))
    })
    .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let mut patient = Signal::connect(&node).await;
    let waiting = patient
        .join_with(
            VISIT,
            &node.token(VISIT, "patient.8c1f2a", Role::Participant),
            Some(&passcode),
        )
        .await;
    assert_eq!(waiting["type"], "waiting", "{waiting}");
    host.send(json!({"v": 1, "type": "lock", "locked": true}))
        .await;
    host.expect("locked").await;
    host.close().await;

    // The CRD's own rules, on the API server.
    let api: Api<BreakGlass> = Api::namespaced(cluster.client(), NS);
    let mut too_long = break_glass("too-long", 61, false);
    let create = |v: Value| {
        let api = api.clone();
        async move {
            let bg: BreakGlass = serde_json::from_value(v).expect("a BreakGlass");
            api.create(&PostParams::default(), &bg).await
        }
    };
    let refused = create(too_long.clone())
        .await
        .expect_err("61 minutes refused");
    assert!(refused.to_string().contains("ttlMinutes"), "{refused}");
    too_long["spec"]["ttlMinutes"] = json!(30);
    too_long["spec"]["reason"] = json!("urgent");
    let refused = create(too_long).await.expect_err("no real reason refused");
    assert!(refused.to_string().contains("reason"), "{refused}");

    // Asked for, with approval: no link until a second person approves.
    create(break_glass("dr-9-chest-pain", 30, true))
        .await
        .expect("create a BreakGlass");
    let requested = phase(&api, "dr-9-chest-pain", "Requested").await;
    assert_eq!(
        condition(&requested, "Approved"),
        ("False".into(), "AwaitingApproval".into())
    );
    assert!(
        secrets
            .get_opt("dr-9-chest-pain-link")
            .await
            .expect("read")
            .is_none(),
        "no link before the approval"
    );
    api.patch(
        "dr-9-chest-pain",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"approvedBy": "Practitioner/dr-2"}})),
    )
    .await
    .expect("approve");
    let active = phase(&api, "dr-9-chest-pain", "Active").await;
    assert_eq!(condition(&active, "Active").0, "True");
    let link = secrets
        .get("dr-9-chest-pain-link")
        .await
        .expect("the link's Secret")
        .data
        .unwrap_or_default();
    let token = String::from_utf8(link["token"].0.clone()).expect("a token");
    assert_eq!(link["room"].0, VISIT.as_bytes());
    // A one-minute grant beside it, to see one end by itself.
    create(break_glass("dr-9-one-minute", 1, false))
        .await
        .expect("create a BreakGlass");

    // The link is its clinician's, for its visit: signed the same way for anyone else or any
    // other visit, it is refused.
    let forged = |sub: &str, room: &str| {
        let claims = JoinClaims {
            sub: sub.into(),
            aud: TENANT.into(),
            room: room.into(),
            role: Role::Host,
            exp: bedside_tests::media::now_secs() + 600,
            nbf: None,
            start: None,
            generation: None,
            break_glass: Some("dr-9-chest-pain".into()),
        };
        bedside_crds::join::issue(&claims, &key).expect("signed")
    };
    for (sub, room) in [
        ("practitioner.dr-5", VISIT),
        ("practitioner.dr-9", "visit-other"),
    ] {
        let (_, reply) = emergency_join(&node, room, &forged(sub, room)).await;
        assert_eq!(
            reply["code"], "break-glass-inactive",
            "{sub} {room}: {reply}"
        );
    }

    // Its clinician enters at once: no passcode, past the lock, a host who sees who waits.
    let (mut clinician, reply) = emergency_join(&node, VISIT, &token).await;
    assert_eq!(reply["type"], "joined", "{reply}");
    assert_eq!(reply["role"], "host", "{reply}");
    let waiting_room = clinician.expect("waiting-room").await;
    let id = waiting_room["waiting"][0]["id"].clone();
    // The lock and the passcode still hold for everyone else.
    let mut stranger = Signal::connect(&node).await;
    let locked = stranger
        .join_with(
            VISIT,
            &node.token(VISIT, "practitioner.dr-4", Role::Host),
            Some(&passcode),
        )
        .await;
    assert_eq!(locked["code"], "meeting-locked", "{locked}");
    clinician
        .send(json!({"v": 1, "type": "admit", "participantId": id}))
        .await;
    patient.expect("joined").await;
    let gauge = |metrics: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with("bedside_break_glass_active{") && l.contains("dr-9-chest-pain"))
    };
    let (_, metrics) = operator.http_get("/metrics").await.expect("metrics");
    assert!(gauge(&metrics), "the alert's metric says a grant is active");

    // Revoked: the clinician leaves, told why; the link is refused from now on.
    api.patch(
        "dr-9-chest-pain",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"revokedBy": "Practitioner/sec-1"}})),
    )
    .await
    .expect("revoke");
    let told = clinician.expect("error").await;
    assert_eq!(told["code"], "break-glass-inactive", "{told}");
    let revoked = phase(&api, "dr-9-chest-pain", "Revoked").await;
    assert_eq!(condition(&revoked, "Revoked").0, "True");
    let (_, reply) = emergency_join(&node, VISIT, &token).await;
    assert_eq!(reply["code"], "break-glass-inactive", "{reply}");
    let (_, metrics) = operator.http_get("/metrics").await.expect("metrics");
    assert!(!gauge(&metrics), "no grant active: {metrics}");

    // The one-minute grant ended by itself, and is kept for review.
    let expired = eventually(
        "the one-minute grant expired",
        Duration::from_secs(150),
        || async {
            api.get("dr-9-one-minute").await.ok().filter(|bg| {
                bg.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.as_str() == "Expired")
            })
        },
    )
    .await;
    assert_eq!(condition(&expired, "Expired").0, "True");

    // Every step is on the record, each with its action, naming the grant and the visit.
    let steps = [
        ("break-glass-requested", Some("practitioner.dr-9")),
        ("break-glass-approved", Some("practitioner.dr-2")),
        ("break-glass-activated", None),
        ("break-glass-revoked", Some("practitioner.sec-1")),
    ];
    for (action, actor) in steps {
        let record = eventually(&format!("a {action} record at the sink"), WAIT, || async {
            let lines: Vec<String> = sink.received().into_iter().map(|(_, m)| m).collect();
            records(&lines, action)
                .into_iter()
                .find(|r| r["place"]["breakGlass"] == "dr-9-chest-pain")
        })
        .await;
        assert_eq!(record["place"]["room"], VISIT, "{record}");
        if let Some(actor) = actor {
            assert_eq!(record["actor"]["user"], actor, "{record}");
            assert_eq!(record["actor"]["role"], "clinician", "{record}");
        }
    }
    let lines = node_records();
    let joins = records(&lines, "break-glass-join");
    assert!(
        joins
            .iter()
            .any(|r| r["actor"]["user"] == "practitioner.dr-9"
                && r["outcome"]["result"] == "success"),
        "the emergency entry is on the node's record: {joins:?}"
    );
    assert!(
        joins
            .iter()
            .any(|r| r["outcome"]["reason"] == "break-glass-inactive"),
        "the refused uses too: {joins:?}"
    );
    assert!(
        records(&lines, "leave")
            .iter()
            .any(|r| r["outcome"]["reason"] == "break-glass-inactive"
                && r["place"]["breakGlass"] == "dr-9-chest-pain"),
        "the clinician's leaving when the grant ended"
    );
    node.shutdown(Duration::from_secs(2)).await;
}
