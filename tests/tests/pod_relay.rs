//! The tenant's TURN relay as the operator runs it, on the pod-running cluster
//! (tests/src/pods.rs): coturn packed from Debian's package into an image, in a restricted pod
//! behind a load balancer on 443. What a platform team and a patient behind a hospital
//! firewall would notice: the tenant Ready with the relay's address in its status, a call from
//! browsers that may reach nothing but TCP 443 held through the relay to a load-balanced media
//! pod, a relay that refuses stale or foreign credentials and any peer but the media pods, and
//! the relay gone when the tenant no longer asks for it.

use std::net::SocketAddr;
use std::time::Duration;

use bedside_crds::join::Role;
use bedside_media_node::relay::credential;
use bedside_tests::TestCluster;
use bedside_tests::browser::{self, Driver, IptablesRule};
use bedside_tests::media::{Signal, TestNode, now_secs, workspace_binary};
use bedside_tests::operator::{
    RunningOperator, ensure_namespace, eventually, install_crd, patch_tenant_spec,
};
use bedside_tests::pod_tenant::{self, IMAGE, NS, TENANT, media_pods};
use bedside_tests::pods::{self, LOAD_BALANCER_NET, PodCluster, play_the_cloud};
use bedside_tests::turn::{self, TurnClient};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, LogParams};
use serde_json::json;

const RELAY_IMAGE: &str = "localhost/bedside-relay:test";
const RELAY_HOST: &str = "relay.lakeside.example";
const RELAY_SELECTOR: &str = "app.kubernetes.io/name=bedside-relay";

#[test]
fn browsers_that_may_reach_only_tcp_443_hold_a_call_through_the_tenants_relay_on_the_cluster() {
    if !pods::require_or_skip() || !browser::require_or_skip() || !turn::require_or_skip() {
        return;
    }
    let cluster = PodCluster::start().unwrap_or_else(|e| panic!("start the cluster: {e}"));
    cluster
        .load_image(IMAGE, &[&workspace_binary("bedside-media-node")])
        .unwrap_or_else(|e| panic!("{e}"));
    cluster
        .load_image(RELAY_IMAGE, &[std::path::Path::new("/usr/bin/turnserver")])
        .unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    cluster.run(move || async move {
        let api = TestCluster::attach(kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let cloud = play_the_cloud(api.client());
        scenario(&api).await;
        cloud.abort();
    });
}

async fn scenario(cluster: &TestCluster) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    ensure_namespace(cluster, NS).await.expect("namespace");
    let mut names: Vec<String> = (1..=4)
        .map(|i| format!("{LOAD_BALANCER_NET}.{i}"))
        .collect();
    names.push(RELAY_HOST.into());
    let cert_pem = pod_tenant::tls_secret(cluster, &names).await;
    install_crd(cluster).await.expect("CRD");
    let _operator = RunningOperator::start(cluster, "operator-0", false)
        .await
        .expect("operator");
    let mut doc = pod_tenant::tenant_doc(
        1,
        "LoadBalancer",
        Some(IMAGE),
        json!({"sinks": [{"stdout": {}}]}),
    );
    doc["spec"]["relay"] = json!({"hostname": RELAY_HOST, "image": RELAY_IMAGE});
    pod_tenant::create_from(cluster, doc).await;

    // Ready only with the relay's pod Ready and its load balancer address in the status.
    let Some(status) = pod_tenant::ready(cluster, 1, Duration::from_secs(420)).await else {
        panic!(
            "the tenant is not Ready with its relay: {}",
            explain(cluster).await
        );
    };
    let relay_ip = status.relay_address.clone().expect("status.relayAddress");
    assert!(relay_ip.starts_with(LOAD_BALANCER_NET), "{status:?}");
    let media_ip = media_address(cluster).await;

    let node = remote_node(cluster, cert_pem).await;
    not_an_open_relay(cluster, &node, &media_ip).await;

    // A hospital guest network: no UDP out, and no TCP to the media port (the node's ICE-TCP);
    // only TCP 443 (signaling and the relay). By port, not address: kube-proxy has translated
    // a load balancer address to the pod's before these rules see it. The relay pod's own
    // traffic to the media pod is forwarded, not sent from here, and passes.
    let _no_udp = IptablesRule::insert(&[
        "OUTPUT",
        "-p",
        "udp",
        "!",
        "-d",
        "127.0.0.0/8",
        "-j",
        "DROP",
    ]);
    let _no_ice_tcp =
        IptablesRule::insert(&["OUTPUT", "-p", "tcp", "--dport", "3478", "-j", "DROP"]);
    let driver = Driver::start().await;
    let resolve = format!("--host-resolver-rules=MAP {RELAY_HOST} {relay_ip}");
    let mut browsers = Vec::new();
    for user in ["u-clinician", "u-patient"] {
        let b = driver.browser_with(|args| args.push(resolve.clone())).await;
        let token = node.token("visit-relayed", user, Role::Host);
        b.goto(&node.link("visit-relayed", &token))
            .await
            .expect("open the web client");
        b.find(fantoccini::Locator::Css("#join"))
            .await
            .expect("the join button")
            .click()
            .await
            .expect("join");
        browsers.push(b);
    }
    for (i, b) in browsers.iter().enumerate() {
        let started = std::time::Instant::now();
        loop {
            let stats = browser::stats(b).await;
            let decoded = stats["inbound"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["kind"] == "video" && s["framesDecoded"].as_u64().unwrap_or(0) > 30);
            if decoded {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "browser {i} decodes video through the relay: {stats}\n{}\nrelay: {}",
                browser::state(b).await,
                relay_log(cluster).await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    for b in &browsers {
        let stats = browser::stats(b).await;
        let transport = &stats["transport"];
        assert_eq!(transport["localType"], "relay", "{stats}");
        assert_eq!(transport["relayProtocol"], "tls", "{stats}");
        assert_eq!(browser::srtp_profile(&stats), "AEAD_AES_256_GCM", "{stats}");
        assert_eq!(browser::state(b).await["mediaPath"], "relay");
    }
    let pod = media_pods(cluster).await.pop().expect("the media pod");
    let metrics = pod_tenant::pod_metrics(&pod).await.expect("metrics");
    let relayed: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("bedside_media_sessions_by_path_total{") && l.contains("path=\"relay\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(relayed, 2.0, "the pod counts two relayed sessions");
    drop(browsers);
    drop(driver);

    relay_pods_never_restarted(cluster).await;
    // The tenant no longer asks for a relay: it goes, load balancer and all.
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        json!({"relay": null}),
        "drop the relay",
    )
    .await;
    eventually("the relay removed", Duration::from_secs(120), || async {
        let deployments: Api<Deployment> = Api::namespaced(cluster.client(), NS);
        let services: Api<Service> = Api::namespaced(cluster.client(), NS);
        let name = format!("{TENANT}-relay");
        let gone = deployments.get_opt(&name).await.ok()?.is_none()
            && services.get_opt(&name).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
}

/// The tenant's endpoint, as the visits API and the browsers reach it: the signaling Service's
/// load balancer address on 443, with the tenant's keys to sign join tokens.
async fn remote_node(cluster: &TestCluster, cert_pem: Vec<u8>) -> TestNode {
    let service: Service = Api::namespaced(cluster.client(), NS)
        .get(&format!("{TENANT}-signaling"))
        .await
        .expect("signaling Service");
    let ip = service
        .status
        .and_then(|s| s.load_balancer?.ingress?.first()?.ip.clone())
        .expect("a signaling load balancer IP");
    let signaling = format!("{ip}:443").parse().expect("an address");
    pod_tenant::remote_node(cluster, signaling, cert_pem).await
}

/// The media pod's advertised address (its load balancer IP).
async fn media_address(cluster: &TestCluster) -> String {
    let service: Service = Api::namespaced(cluster.client(), NS)
        .get(&format!("{TENANT}-media-0"))
        .await
        .expect("the media pod's Service");
    service
        .status
        .and_then(|s| s.load_balancer?.ingress?.first()?.ip.clone())
        .expect("a media load balancer IP")
}

/// The relay serves the credential a join hands out, toward the media pod's address only;
/// an expired credential, another tenant's, and any other peer are refused. Asked over TURN/UDP
/// at the relay pod itself (the same coturn and rules as behind its TLS port).
async fn not_an_open_relay(cluster: &TestCluster, node: &TestNode, media_ip: &str) {
    // kube-proxy may not have the new endpoints in its rules yet (it rejects until then).
    let mut signal = eventually(
        "signaling through the load balancer",
        Duration::from_secs(60),
        || async { Signal::try_connect(node).await.ok() },
    )
    .await;
    let joined = signal
        .join(
            "visit-credential",
            &node.token("visit-credential", "u-1", Role::Host),
        )
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let ice = &joined["iceServers"][0];
    assert_eq!(
        ice["urls"][0],
        format!("turns:{RELAY_HOST}:443?transport=tcp"),
        "{joined}"
    );
    let username = ice["username"].as_str().expect("a username");
    let password = ice["credential"].as_str().expect("a credential");
    let relay_pod = relay_pods(cluster).await.pop().expect("a relay pod");
    let pod_ip = relay_pod
        .status
        .and_then(|s| s.pod_ip)
        .expect("the relay pod's IP");
    let server: SocketAddr = format!("{pod_ip}:3478").parse().expect("addr");
    let media: SocketAddr = format!("{media_ip}:3478").parse().expect("addr");

    let (server, username, password) = (server, username.to_string(), password.to_string());
    let media_pod_ip = media_pods(cluster)
        .await
        .pop()
        .and_then(|p| p.status?.pod_ip)
        .expect("media pod IP");
    let signaling_ip = node.https_base().trim_start_matches("https://").to_string();
    let secret_of_another_tenant = [7u8; 32];
    let log = relay_log(cluster).await;
    tokio::task::spawn_blocking(move || {
        let mut browser = TurnClient::new(server, &username, &password);
        let relayed = browser
            .allocate()
            .unwrap_or_else(|e| panic!("the join's credential allocates: {e}\n{log}"));
        browser
            .permit(relayed, media)
            .unwrap_or_else(|e| panic!("the media pod's address is a permitted peer: {e}"));
        for elsewhere in [
            signaling_ip,
            format!("{media_pod_ip}:3478"),
            format!("{pod_ip}:5349"),
        ] {
            let peer: SocketAddr = elsewhere.parse().expect("addr");
            let refused = browser.permit(relayed, peer).expect_err(&elsewhere);
            assert!(refused.contains("403"), "{elsewhere}: {refused}");
        }
        let (_, id) = username.split_once(':').expect("EXPIRY:ID");
        let refusals = [
            (
                "an expired credential",
                credential(b"unused", now_secs() - 60, id),
            ),
            (
                "another tenant's credential",
                credential(&secret_of_another_tenant, now_secs() + 600, "p-other"),
            ),
        ];
        for (what, (username, password)) in refusals {
            let refused = TurnClient::new(server, &username, &password)
                .allocate()
                .expect_err(what);
            assert!(refused.contains("401"), "{what}: {refused}");
        }
    })
    .await
    .expect("the TURN checks");
}

/// The relay's pods, not those on their way out after a rollout.
async fn relay_pods(cluster: &TestCluster) -> Vec<Pod> {
    Api::<Pod>::namespaced(cluster.client(), NS)
        .list(&ListParams::default().labels(RELAY_SELECTOR))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn relay_pods_never_restarted(cluster: &TestCluster) {
    for pod in relay_pods(cluster).await {
        let statuses = pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default();
        assert!(
            !statuses.is_empty() && statuses.iter().all(|c| c.ready && c.restart_count == 0),
            "the relay pod ready and never restarted: {statuses:?}"
        );
    }
}

async fn relay_log(cluster: &TestCluster) -> String {
    let pods = Api::<Pod>::namespaced(cluster.client(), NS);
    let mut text = String::new();
    for pod in relay_pods(cluster).await {
        let name = pod.metadata.name.unwrap_or_default();
        let log = pods
            .logs(
                &name,
                &LogParams {
                    tail_lines: Some(40),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| format!("<no log: {e}>"));
        text.push_str(&format!("{name}:\n{log}\n"));
    }
    text
}

/// The tenant's conditions and the relay's pods, when the tenant is not Ready.
async fn explain(cluster: &TestCluster) -> String {
    let conditions = pod_tenant::conditions(cluster).await;
    let relay: Vec<String> = relay_pods(cluster)
        .await
        .into_iter()
        .map(|p| {
            format!(
                "{}: {:?}",
                p.metadata.name.unwrap_or_default(),
                p.status.and_then(|s| s.container_statuses)
            )
        })
        .collect();
    format!(
        "{conditions}\nrelay pods: {relay:?}\n{}",
        relay_log(cluster).await
    )
}
