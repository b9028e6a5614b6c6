//! bedside as a platform team runs it: a HealthcareTenant applied on a real Kubernetes that
//! runs pods (kubelet + containerd + kube-proxy, tests/src/pods.rs), the operator and the media
//! node packed into images offline; the operator installed from deploy/bedside.yaml as the
//! README says (running in its own pods), or in the test process as its own ServiceAccount. What the team would notice: pods
//! that become Ready and stay up, each advertising an address of its own, the tenant Ready, and a
//! visit whose media flows through the advertised node port.

use std::collections::BTreeSet;
use std::time::Duration;

use bedside_crds::HealthcareTenant;
use bedside_crds::join::Role;
use bedside_tests::TestCluster;
use bedside_tests::browser::{self, Driver};
use bedside_tests::https::Https;
use bedside_tests::media::{
    PeerOptions, RustPeer, TestNode, wait_until, wait_until_async, workspace_binary,
};
use bedside_tests::operator::{
    RunningOperator, ensure_namespace, eventually, install_crd, patch_tenant_spec,
};
use bedside_tests::pod_tenant;
use bedside_tests::pods::{self, LOAD_BALANCER_NET, PodCluster, play_the_cloud};
use bedside_tests::rsyslog::Rsyslog;
use fantoccini::Locator;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams};
use serde_json::json;

use bedside_tests::pod_tenant::{IMAGE, NS, PUBLIC_ADDRESS, SELECTOR, TENANT, media_pods};

/// How the tenant exposes its media nodes, and so the address each pod must advertise.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Exposure {
    /// `publicAddress` with the pod's own node port.
    NodePort,
    /// The pod's own load balancer IP (the harness plays the cloud) with port 3478.
    LoadBalancer,
}

/// Where the operator runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Install {
    /// As the README tells a platform team: `deploy/bedside.yaml`, the operator in its own pods
    /// as the chart's ServiceAccount, the media node from the image the operator names.
    Manifest,
    /// In the test process, as its own ServiceAccount, the media node from the test's image.
    InProcess,
}

#[test]
fn a_node_port_tenant_installed_from_the_readme_runs_each_pod_at_its_own_address_and_carries_a_visit()
 {
    on_a_cluster(Exposure::NodePort, Install::Manifest);
}

#[test]
fn a_load_balancer_tenant_runs_each_pod_ready_at_its_own_address_and_carries_a_visit() {
    on_a_cluster(Exposure::LoadBalancer, Install::InProcess);
}

fn on_a_cluster(exposure: Exposure, install: Install) {
    if !pods::require_or_skip() {
        return;
    }
    let cluster = PodCluster::start().unwrap_or_else(|e| panic!("start the cluster: {e}"));
    let media_image = match install {
        Install::InProcess => IMAGE.to_string(),
        Install::Manifest => bedside_operator::names::default_image(),
    };
    cluster
        .load_image(&media_image, &[&workspace_binary("bedside-media-node")])
        .unwrap_or_else(|e| panic!("{e}"));
    if install == Install::Manifest {
        install_from_the_manifest(&cluster);
    }
    // What a cloud's default StorageClass would provision: the audit buffers' claims bind here.
    cluster
        .provide_volumes(4, "1Gi")
        .unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    cluster.run(move || async move {
        let api = TestCluster::attach(kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let cloud = (exposure == Exposure::LoadBalancer).then(|| play_the_cloud(api.client()));
        scenario(&api, exposure, install).await;
        if let Some(cloud) = cloud {
            cloud.abort();
        }
    });
}

/// The README's install, with the operator image packed offline under the name the manifest
/// uses. A v1.20 server cannot server-side apply the CRD's CEL fields, so this is the `kubectl
/// create` docs/install.md gives for servers before 1.25.
fn install_from_the_manifest(cluster: &PodCluster) {
    let manifest = bedside_tests::repo_root().join("deploy/bedside.yaml");
    let text = std::fs::read_to_string(&manifest).expect("deploy/bedside.yaml");
    let image = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("image: ghcr.io/bedside-health/bedside-operator:")
        })
        .map(|tag| format!("ghcr.io/bedside-health/bedside-operator:{tag}"))
        .expect("the operator image in the manifest");
    cluster
        .load_image(&image, &[&workspace_binary("bedside-operator")])
        .unwrap_or_else(|e| panic!("{e}"));
    for args in [
        vec!["create", "namespace", "bedside-system"],
        vec![
            "create",
            "--validate=false",
            "-f",
            manifest.to_str().expect("path"),
        ],
    ] {
        let out = cluster.kubectl().args(&args).output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Where the test reaches the tenant's signaling: the node port on the node's address, or
/// the signaling Service's own load balancer IP on 443.
async fn public_signaling(cluster: &TestCluster, exposure: Exposure) -> std::net::SocketAddr {
    let service: Service = Api::namespaced(cluster.client(), NS)
        .get("lakeside-behavioral-signaling")
        .await
        .expect("signaling Service");
    let text = match exposure {
        Exposure::NodePort => {
            let port = service
                .spec
                .and_then(|s| s.ports)
                .and_then(|p| p.first()?.node_port)
                .expect("a signaling node port");
            format!("{PUBLIC_ADDRESS}:{port}")
        }
        Exposure::LoadBalancer => {
            let ip = service
                .status
                .and_then(|s| s.load_balancer?.ingress?.first()?.ip.clone())
                .expect("a signaling load balancer IP");
            format!("{ip}:443")
        }
    };
    text.parse().expect("an address")
}

async fn scenario(cluster: &TestCluster, exposure: Exposure, install: Install) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    ensure_namespace(cluster, NS).await.expect("namespace");
    let cert_pem = tls_secret(cluster).await;
    let operator = match install {
        Install::InProcess => {
            install_crd(cluster).await.expect("CRD");
            Some(
                RunningOperator::start(cluster, "operator-0", false)
                    .await
                    .expect("operator"),
            )
        }
        Install::Manifest => {
            operator_pod_ready(cluster).await;
            None
        }
    };
    // Installed in process, the tenant also sends its audit to a SIEM (rsyslog over TLS, on the
    // node's address) and keeps its buffers on volumes of their own from the start; installed
    // from the manifest, it turns that storage on later, in a rolling update.
    let sink_dir = tempfile::tempdir().expect("temp dir");
    let mut sink = match install {
        Install::InProcess => Some(siem(cluster, sink_dir.path()).await),
        Install::Manifest => None,
    };
    create_tenant(cluster, 3, exposure, install, sink.as_ref()).await;

    // Every pod Ready, the tenant Ready with all three, each pod at an address of its own.
    let tenants: Api<HealthcareTenant> = Api::namespaced(cluster.client(), NS);
    let ready = |count: i32| {
        let tenants = tenants.clone();
        async move {
            let status = tenants.get(TENANT).await.ok()?.status?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && status.ready_media_nodes == Some(count)).then_some(status)
        }
    };
    // With load balancers the pods start before their addresses exist, and the kubelet brings
    // the addresses ConfigMap into them at its next sync (up to about a minute), so allow for a
    // busy machine.
    let mut status = None;
    let started = std::time::Instant::now();
    while status.is_none() && started.elapsed() < Duration::from_secs(420) {
        status = ready(3).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let Some(status) = status else {
        panic!(
            "the tenant is not Ready with 3 media nodes after 7 minutes: {}",
            explain(cluster).await
        );
    };
    let advertised = addresses(cluster).await;
    assert_eq!(advertised.len(), 3, "{advertised:?}");
    let distinct: BTreeSet<&String> = advertised.iter().map(|(_, a)| a).collect();
    assert_eq!(
        distinct.len(),
        3,
        "each pod advertises its own address: {advertised:?}"
    );
    for (pod, address) in &advertised {
        let expected = match exposure {
            Exposure::NodePort => format!("{PUBLIC_ADDRESS}:"),
            Exposure::LoadBalancer => format!("{LOAD_BALANCER_NET}."),
        };
        assert!(address.starts_with(&expected), "{pod}: {address}");
        let log = pod_log(cluster, pod).await;
        assert!(
            log.contains("advertising this media address") && log.contains(address.as_str()),
            "{pod} advertises {address}: {log}"
        );
    }
    // The CPU limit decides each pod's media loops: one core for the tenant installed in
    // process (it sets `limits.cpu: "1"`), every core of the machine without a limit.
    let loops = match install {
        Install::InProcess => 1.0,
        Install::Manifest => std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
    };
    for pod in media_pods(cluster).await {
        let metrics = pod_tenant::pod_metrics(&pod).await.unwrap_or_default();
        let running = metrics
            .lines()
            .find(|l| l.starts_with("bedside_media_loops{"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        assert_eq!(
            running,
            Some(loops),
            "media loops of {:?}",
            pod.metadata.name
        );
    }
    let expected_endpoint = match exposure {
        Exposure::NodePort => format!(
            "wss://telehealth.lakeside.example:{}",
            public_signaling(cluster, exposure).await.port()
        ),
        Exposure::LoadBalancer => "wss://telehealth.lakeside.example".into(),
    };
    assert_eq!(status.endpoint, Some(expected_endpoint), "{status:?}");

    // They stay up: the probes pass (a probe that fails restarts a pod within 30 s).
    tokio::time::sleep(Duration::from_secs(60)).await;
    let pods = media_pods(cluster).await;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        assert!(
            statuses.iter().all(|c| c.ready && c.restart_count == 0),
            "{name} ready and never restarted: {statuses:?}"
        );
    }

    // Visits through the tenant's public endpoint, never a pod IP.
    let keys: Api<Secret> = Api::namespaced(cluster.client(), NS);
    let keys = keys
        .get("lakeside-behavioral-keys")
        .await
        .expect("keys")
        .data
        .expect("data");
    let signaling = public_signaling(cluster, exposure).await;
    reaches_only_live_pods(signaling).await;
    let node = TestNode::remote(
        signaling,
        cert_pem,
        TENANT,
        keys["join-token.key"].0.clone(),
        keys["audit-hmac.key"].0.clone(),
    );
    rooms_meet_on_one_pod_each(cluster, &node, sink.as_mut()).await;
    a_patient_waits_and_is_admitted_in_chromium_until_the_visit_is_cancelled(cluster, &node).await;

    // Down to one node, with a call on a pod that goes: the call goes on while its pod
    // drains; once it ends, the pod and its media Service go; the remaining pod keeps its address.
    let (room, mut call) =
        a_call_on_a_pod_other_than(cluster, &node, "lakeside-behavioral-media-0").await;
    let draining = pod_tenant::room_holder(cluster, &room)
        .await
        .expect("the call's pod");
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        json!({"mediaNodes": {"replicas": 1}}),
        "scale down",
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    eventually(
        "the call's pod told to stop",
        Duration::from_secs(120),
        || async {
            pods.get(&draining)
                .await
                .ok()?
                .metadata
                .deletion_timestamp
                .map(|_| ())
        },
    )
    .await;
    let before = received(&call);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = received(&call);
    if !after.iter().zip(&before).all(|(a, b)| *a > *b + 100) {
        let services: Vec<String> = Api::<Service>::namespaced(cluster.client(), NS)
            .list(&ListParams::default().labels(SELECTOR))
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "the call on {draining} goes on while the scale-down drains it: {before:?} -> {after:?}\nservices: {services:?}\nits counters: {}\nits log: {}\naddresses: {:?}",
            pod_counters(cluster, &draining).await,
            pod_log(cluster, &draining).await,
            addresses(cluster).await,
        );
    }
    assert!(
        call.iter().all(|p| p.saw("closing").is_empty()),
        "nobody in the call was told to leave"
    );
    for peer in call.drain(..) {
        peer.leave().await;
    }
    let services: Api<Service> = Api::namespaced(cluster.client(), NS);
    eventually(
        "the removed pods' media Services deleted",
        Duration::from_secs(120),
        || async {
            let names: Vec<String> = services
                .list(
                    &ListParams::default()
                        .labels(&format!("{SELECTOR},bedside.health/service=media")),
                )
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            (names == ["lakeside-behavioral-media-0"]).then_some(())
        },
    )
    .await;
    eventually("one pod left", Duration::from_secs(120), || async {
        (media_pods(cluster).await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        addresses(cluster).await,
        advertised[..1].to_vec(),
        "the remaining pod keeps its address"
    );

    // A visit through the tenant's public endpoint: media crosses the pod's advertised address.
    reaches_only_live_pods(signaling).await;
    let room = "visit-on-a-pod";
    let mut clinician = RustPeer::join(
        &node,
        room,
        &node.token(room, "clin-1", Role::Host),
        from_the_node(),
    )
    .await;
    let mut patient = RustPeer::join(
        &node,
        room,
        &node.token(room, "pt-1", Role::Host),
        from_the_node(),
    )
    .await;
    clinician.start_publishing();
    patient.start_publishing();
    let flowing = wait_until(Duration::from_secs(20), || {
        clinician.packets_from(&patient.participant_id) > 20
            && patient.packets_from(&clinician.participant_id) > 20
    })
    .await;
    assert!(
        flowing,
        "media flows both ways through the pod's address ({exposure:?}); the pod's log: {}\nits counters: {}",
        pod_log(cluster, "lakeside-behavioral-media-0").await,
        pod_counters(cluster, "lakeside-behavioral-media-0").await
    );
    // The pod's audit chain carries the pod's name.
    let log = pod_log(cluster, "lakeside-behavioral-media-0").await;
    assert!(
        log.lines()
            .any(|l| l.contains("\"join\"") && l.contains("lakeside-behavioral-media-0")),
        "join records name the pod: {log}"
    );

    // A rolling update (a spec change) stops the pod: it takes no new visits, and the call in
    // progress goes on, through its pod's media Service, until the participants leave.
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let old_uid = pods
        .get("lakeside-behavioral-media-0")
        .await
        .expect("pod")
        .metadata
        .uid;
    // From the manifest: audit storage turned on, a change the API server refuses to make to a
    // StatefulSet in place, so the operator replaces it, keeping its pods, and they roll.
    let change = match install {
        Install::InProcess => json!({"meetings": {"idleTimeout": "5m"}}),
        Install::Manifest => json!({"audit": {"storage": {}}}),
    };
    patch_tenant_spec(
        &cluster.client(),
        NS,
        TENANT,
        change,
        "a spec change that rolls the pods",
    )
    .await;
    eventually("the pod told to stop", Duration::from_secs(120), || async {
        let pod = pods.get("lakeside-behavioral-media-0").await.ok()?;
        pod.metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    let before = (
        clinician.packets_from(&patient.participant_id),
        patient.packets_from(&clinician.participant_id),
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = (
        clinician.packets_from(&patient.participant_id),
        patient.packets_from(&clinician.participant_id),
    );
    assert!(
        after.0 > before.0 + 100 && after.1 > before.1 + 100,
        "media goes on while the pod drains: {before:?} -> {after:?}"
    );
    assert!(
        clinician.saw("closing").is_empty() && patient.saw("closing").is_empty(),
        "nobody in the call was told to leave"
    );
    clinician.leave().await;
    patient.leave().await;
    // The call over, the pod goes, and its replacement serves at the same address.
    eventually("a new pod Ready", Duration::from_secs(120), || async {
        let pod = pods.get("lakeside-behavioral-media-0").await.ok()?;
        (pod.metadata.uid != old_uid).then_some(())
    })
    .await;
    eventually("the tenant Ready again", Duration::from_secs(120), || {
        ready(1)
    })
    .await;
    assert_eq!(
        addresses(cluster).await,
        advertised[..1].to_vec(),
        "the new pod advertises its predecessor's address"
    );
    buffers_on_a_bound_claim(cluster, "lakeside-behavioral-media-0").await;
    if let Some(operator) = operator {
        operator.stop().await.expect("the operator stops cleanly");
    }
}

/// kube-proxy follows the endpoints a moment after pods come and go: until then a connection
/// may still be sent to a pod that is gone. A browser would retry; the test waits until it
/// need not.
async fn reaches_only_live_pods(signaling: std::net::SocketAddr) {
    eventually(
        "the signaling endpoint reaches only live pods",
        Duration::from_secs(60),
        || async {
            for _ in 0..5 {
                let connect = tokio::net::TcpStream::connect(signaling);
                tokio::time::timeout(Duration::from_secs(2), connect)
                    .await
                    .ok()?
                    .ok()?;
            }
            Some(())
        },
    )
    .await;
}

/// Peers connect from the cluster node's address, as a browser outside the cluster would.
fn from_the_node() -> PeerOptions {
    PeerOptions {
        bind_ip: PUBLIC_ADDRESS.parse().expect("ip"),
        ..PeerOptions::default()
    }
}

/// Six visits of two or three participants, every join through the public endpoint (which
/// spreads connections over the three pods): each visit meets on one pod, the visits spread over
/// more than one pod, everyone gets everyone else's media, and the audit trail of the room's pod
/// names each participant's own address, not the pod that carried the join.
async fn rooms_meet_on_one_pod_each(
    cluster: &TestCluster,
    node: &TestNode,
    sink: Option<&mut Rsyslog>,
) {
    let mut rooms: Vec<(String, Vec<RustPeer>)> = Vec::new();
    for r in 0..6 {
        let room = format!("placed-visit-{r}");
        let mut peers = Vec::new();
        for user in users_of(r) {
            let token = node.token(&room, &user, Role::Host);
            let mut peer = RustPeer::join(node, &room, &token, from_the_node()).await;
            peer.start_publishing();
            peers.push(peer);
        }
        rooms.push((room, peers));
    }
    let flowing = wait_until(Duration::from_secs(45), || {
        rooms.iter().all(|(_, peers)| in_media(peers, 20))
    })
    .await;
    let mut counters = String::new();
    let mut logs = Vec::new();
    for pod in media_pods(cluster).await {
        let name = pod.metadata.name.clone().unwrap_or_default();
        counters.push_str(&format!("{name}: {}\n", pod_counters(cluster, &name).await));
        logs.push(pod_log(cluster, &name).await);
    }
    assert!(
        flowing,
        "every participant receives every other one's media in their room; counters: {counters}"
    );
    every_pods_chain_verifies(node, &logs);

    let pod_ips: Vec<String> = media_pods(cluster)
        .await
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    let mut room_pods: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    let mut joined = BTreeSet::new();
    for line in logs.iter().flat_map(|log| log.lines()) {
        let Ok(record) = serde_json::from_str::<bedside_audit::chain::Record>(line) else {
            continue;
        };
        let event = record.event;
        let Some(room) = event.place.room.map(|r| r.to_string()) else {
            continue;
        };
        if event.action != bedside_audit::event::Action::Join || !room.starts_with("placed-") {
            continue;
        }
        let ip = event
            .place
            .client_ip
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        assert!(
            !pod_ips.contains(&ip),
            "the join record names the client, not the pod that carried the join: {line}"
        );
        joined.insert(event.actor.user.map(|u| u.to_string()).unwrap_or_default());
        room_pods
            .entry(room)
            .or_default()
            .insert(event.place.node.to_string());
    }
    assert_eq!(
        joined.len(),
        14,
        "every join is in a pod's audit trail: {joined:?}"
    );
    assert_eq!(room_pods.len(), 6, "{room_pods:?}");
    assert!(
        room_pods.values().all(|pods| pods.len() == 1),
        "each visit meets on one pod: {room_pods:?}"
    );
    let used: BTreeSet<&String> = room_pods.values().flatten().collect();
    assert!(
        used.len() >= 2,
        "visits spread over the pods: {room_pods:?}"
    );
    assert!(
        counters.contains("bedside_media_joins_forwarded_total"),
        "pods carried joins on to their room's pod: {counters}"
    );
    println!("visits by pod: {room_pods:?}\ncounters:\n{counters}");
    a_pod_dies_during_calls(cluster, node, rooms, &room_pods, sink).await;
}

/// Two Chromiums through the web client and the tenant's public endpoint: the patient waits in
/// the waiting room until the clinician (whose connection may have reached another pod) admits
/// them, then each decodes the other's video.
async fn a_patient_waits_and_is_admitted_in_chromium_until_the_visit_is_cancelled(
    cluster: &TestCluster,
    node: &TestNode,
) {
    if !browser::require_or_skip() {
        return;
    }
    // The browsers are on a network that lets no UDP out (a clinic's guest Wi-Fi): their
    // media reaches the pods over ICE-TCP, through the same Services and addresses.
    // By destination, not interface: a node port on the node's own address leaves through the
    // bridge only after kube-proxy's translation.
    let _no_udp = browser::IptablesRule::insert(&[
        "OUTPUT",
        "-p",
        "udp",
        "!",
        "-d",
        "127.0.0.0/8",
        "-j",
        "DROP",
    ]);
    let driver = Driver::start().await;
    // Booked as a scheduling system books it: through the visits API on the tenant's endpoint,
    // with the credential the operator put in the tenant's Secret.
    let credential = api_credential(cluster).await;
    let https = Https::trusting(&node.cert_pem);
    let visits = format!("{}/api/v1/visits", node.https_base());
    let booked = https
        .call(
            "POST",
            &visits,
            Some(&credential),
            Some(
                &json!({"durationMinutes": 30, "host": "Practitioner/clin-1",
                "participants": [{"reference": "Patient/pat-1", "role": "patient"}]}),
            ),
        )
        .await;
    assert_eq!(booked.status, 201, "{}", booked.text);
    let text = |v: &serde_json::Value| v.as_str().expect("a string").to_string();
    let (visit_id, passcode) = (text(&booked.json["id"]), text(&booked.json["passcode"]));
    let host_link = text(&booked.json["host"]["link"]);
    let patient_link = text(&booked.json["invitees"][0]["link"]);
    let open = async |url: &str| {
        let b = driver.browser().await;
        b.goto(url).await.expect("open the web client");
        b.execute(
            "document.getElementById('passcode').value = arguments[0];",
            vec![serde_json::Value::String(passcode.clone())],
        )
        .await
        .expect("type the passcode");
        b.find(Locator::Css("#join"))
            .await
            .expect("the join button")
            .click()
            .await
            .expect("join");
        b
    };
    let until =
        async |what: &str, b: &fantoccini::Client, check: &dyn Fn(&serde_json::Value) -> bool| {
            let started = std::time::Instant::now();
            loop {
                let state = browser::state(b).await;
                if check(&state) {
                    return state;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{what}: not within a minute: {state}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
    let clinician = open(&host_link).await;
    until("the clinician is in", &clinician, &|s| s["role"] == "host").await;
    let patient = open(&patient_link).await;
    let waiting = until("the patient waits", &patient, &|s| s["waiting"] == true).await;
    assert_eq!(waiting["mediaConnected"], false, "no media while waiting");
    let id = waiting["participantId"]
        .as_str()
        .expect("an id")
        .to_string();
    let admit = format!("#waiting-list li[data-participant='{id}'] button.admit");
    let started = std::time::Instant::now();
    loop {
        match clinician.find(Locator::Css(&admit)).await {
            Ok(button) => {
                button.click().await.expect("admit");
                break;
            }
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "the clinician sees the waiting patient: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for b in [&clinician, &patient] {
        let started = std::time::Instant::now();
        loop {
            let stats = browser::stats(b).await;
            let decoded = stats["inbound"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["kind"] == "video")
                .any(|s| s["framesDecoded"].as_u64().unwrap_or(0) > 10);
            if decoded {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "each browser decodes the other's video: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    for b in [&clinician, &patient] {
        let stats = browser::stats(b).await;
        assert_eq!(stats["transport"]["protocol"], "tcp", "{stats}");
        assert_eq!(browser::srtp_profile(&stats), "AEAD_AES_256_GCM", "{stats}");
        assert_eq!(browser::state(b).await["mediaPath"], "tcp");
    }
    let mut over_tcp = 0.0;
    for pod in media_pods(cluster).await {
        let text = pod_tenant::pod_metrics(&pod).await.unwrap_or_default();
        over_tcp += text
            .lines()
            .filter(|l| {
                l.starts_with("bedside_media_sessions_by_path_total{") && l.contains("path=\"tcp\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert_eq!(over_tcp, 2.0, "the pods count two sessions over TCP");
    // The clinic reissues the links (one leaked, say): the old host link, opened again through
    // the Service, says it was replaced; the two in the call stay in it.
    let reissued = https
        .call(
            "POST",
            &format!("{visits}/{visit_id}/reissue"),
            Some(&credential),
            Some(
                &json!({"durationMinutes": 30, "host": "Practitioner/clin-1",
                "participants": [{"reference": "Patient/pat-1", "role": "patient"}]}),
            ),
        )
        .await;
    assert_eq!(reissued.status, 200, "{}", reissued.text);
    let new_host_link = text(&reissued.json["host"]["link"]);
    let old = open(&host_link).await;
    until("the old link says it was replaced", &old, &|s| {
        s["page"] == "replaced" && s["visitTitle"] == "This link was replaced"
    })
    .await;
    // The clinic cancels the visit through the API: both browsers say so, and its links are
    // refused through the tenant's Service, whichever pod a new connection reaches.
    let cancel = https
        .call(
            "POST",
            &format!("{visits}/{visit_id}/cancel"),
            Some(&credential),
            Some(&json!({"until": booked.json["window"]["closes"]})),
        )
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.text);
    let cancelled = |s: &serde_json::Value| {
        s["page"] == "cancelled" && s["visitTitle"] == "This visit was cancelled"
    };
    until("the clinician is told", &clinician, &cancelled).await;
    until("the patient is told", &patient, &cancelled).await;
    let again = open(&new_host_link).await;
    until("the clinician's new link is refused", &again, &cancelled).await;
    let status = https
        .call(
            "GET",
            &format!("{visits}/{visit_id}"),
            Some(&credential),
            None,
        )
        .await;
    assert_eq!(status.json["cancelled"], true, "{}", status.text);
    for b in [clinician, patient, old, again] {
        let _ = b.close().await;
    }
}

/// The visits API credential the operator made for the tenant.
async fn api_credential(cluster: &TestCluster) -> String {
    let secret = Api::<Secret>::namespaced(cluster.client(), NS)
        .get(&format!("{TENANT}-api"))
        .await
        .expect("the tenant's API credentials");
    let initial = secret.data.expect("data")["initial"].0.clone();
    String::from_utf8(initial).expect("a text credential")
}

/// `bedside-audit verify` accepts each pod's audit chain (the stdout sink's records, in the
/// pod's log) from its first record on: none altered, none missing, one chain per pod.
fn every_pods_chain_verifies(node: &TestNode, logs: &[String]) {
    let key = bedside_audit::AuditKey::new(&node.audit_key).expect("the tenant's audit key");
    for log in logs {
        let records: Vec<&str> = log.lines().filter(|l| l.starts_with("{\"seq\"")).collect();
        let verified = bedside_audit::verify(records.iter().copied(), &key)
            .unwrap_or_else(|broken| panic!("a pod's audit chain is broken: {broken}\n{log}"));
        assert_eq!(verified.chains.len(), 1, "one chain per pod: {verified:?}");
        let chain = &verified.chains[0];
        assert!(
            chain.node.starts_with("lakeside-behavioral-media-"),
            "named by its pod: {chain:?}"
        );
        assert_eq!(
            chain.first_seq,
            Some(1),
            "nothing missing from its start: {chain:?}"
        );
        assert_eq!(chain.records, records.len(), "{chain:?}");
    }
}

/// A call of two, in the first room placement puts on a pod other than `pod`.
async fn a_call_on_a_pod_other_than(
    cluster: &TestCluster,
    node: &TestNode,
    pod: &str,
) -> (String, Vec<RustPeer>) {
    for n in 0..10 {
        let room = format!("visit-scaled-{n}");
        let mut call = Vec::new();
        for user in ["u-s-clinician", "u-s-patient"] {
            let mut peer = RustPeer::join(
                node,
                &room,
                &node.token(&room, user, Role::Host),
                from_the_node(),
            )
            .await;
            peer.start_publishing();
            call.push(peer);
        }
        if pod_tenant::room_holder(cluster, &room).await.as_deref() != Some(pod) {
            assert!(
                wait_until(Duration::from_secs(20), || in_media(&call, 20)).await,
                "the call's media flows"
            );
            return (room, call);
        }
        for peer in call {
            peer.leave().await;
        }
    }
    panic!("placement never chose a pod other than {pod} in 10 rooms");
}

/// The meeting memory in the room's lease (what the pod holding the room next starts from).
async fn room_memory(cluster: &TestCluster, room: &str) -> Option<serde_json::Value> {
    let text = pod_tenant::room_lease(cluster, room)
        .await?
        .metadata
        .annotations?
        .get(bedside_media_node::placement::MEMORY_ANNOTATION)?
        .clone();
    serde_json::from_str(&text).ok()
}

/// The participants of visit `r`: three in the first two, two in the others.
fn users_of(r: usize) -> Vec<String> {
    (0..if r < 2 { 3 } else { 2 })
        .map(|p| format!("u-{r}-{p}"))
        .collect()
}

/// Everyone in the room has received more than `packets` from everyone else.
fn in_media(peers: &[RustPeer], packets: u64) -> bool {
    peers.iter().all(|a| {
        peers
            .iter()
            .filter(|b| b.participant_id != a.participant_id)
            .all(|b| a.packets_from(&b.participant_id) > packets)
    })
}

/// Per rejoined participant: packets from each other one, the errors it was sent, and whether
/// its signaling is up: what a failed recovery looks like from the participants' side.
fn rejoined_media(rooms: &[Vec<RustPeer>]) -> String {
    let mut out = String::new();
    for peers in rooms {
        for a in peers {
            let from: Vec<String> = peers
                .iter()
                .filter(|b| b.participant_id != a.participant_id)
                .map(|b| format!("{}={}", b.participant_id, a.packets_from(&b.participant_id)))
                .collect();
            out.push_str(&format!(
                "  {} signaling={} from [{}] errors={:?}\n",
                a.participant_id,
                a.signaling_open(),
                from.join(", "),
                a.saw("error")
            ));
        }
    }
    out
}

/// The WARN and ERROR lines of every media pod's log.
async fn pod_warnings(cluster: &TestCluster) -> String {
    let mut out = String::new();
    for pod in media_pods(cluster).await {
        let name = pod.metadata.name.unwrap_or_default();
        let log = pod_log(cluster, &name).await;
        // The whole log beside the test's output, for what the warnings do not say.
        let _ = std::fs::write(std::env::temp_dir().join(format!("{name}.log")), &log);
        for line in log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            out.push_str(&format!("  {name}: {line}\n"));
        }
    }
    out
}

/// Packets each participant has received from each other one.
fn received(peers: &[RustPeer]) -> Vec<u64> {
    peers
        .iter()
        .flat_map(|a| {
            peers
                .iter()
                .filter(|b| b.participant_id != a.participant_id)
                .map(|b| a.packets_from(&b.participant_id))
        })
        .collect()
}

/// A pod dies during calls (deleted at once, no drain). Its participants join again, as the
/// web client does by itself, and are back in media within 15 s, their visits placed again;
/// the visits on the other pods go on without a gap.
async fn a_pod_dies_during_calls(
    cluster: &TestCluster,
    node: &TestNode,
    rooms: Vec<(String, Vec<RustPeer>)>,
    room_pods: &std::collections::BTreeMap<String, BTreeSet<String>>,
    mut sink: Option<&mut Rsyslog>,
) {
    // The SIEM is down from here until the dead pod's replacement runs: what the pod seals
    // meanwhile waits in its buffers when it dies.
    if let Some(sink) = sink.as_mut() {
        sink.kill();
    }
    let victim = room_pods["placed-visit-0"]
        .first()
        .cloned()
        .expect("visit 0 has a pod");
    let (mut hit, spared): (Vec<_>, Vec<_>) = rooms
        .into_iter()
        .partition(|(room, _)| room_pods[room].contains(&victim));
    // In visit 0 the clinician removes u-0-2 and locks the meeting: that must outlive the pod.
    let visit_0 = &mut hit[0].1;
    let expelled = visit_0.remove(2);
    visit_0[0]
        .send(
            serde_json::json!({"v": 1, "type": "expel", "participantId": expelled.participant_id}),
        )
        .await;
    visit_0[0]
        .send(serde_json::json!({"v": 1, "type": "lock", "locked": true}))
        .await;
    let kept = wait_until_async(Duration::from_secs(20), || async {
        room_memory(cluster, "placed-visit-0")
            .await
            .is_some_and(|m| {
                m["locked"] == true && m["expelled"].as_array().is_some_and(|e| e.len() == 1)
            })
    })
    .await;
    if !kept {
        let lease =
            Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(cluster.client(), NS)
                .get(&format!(
                    "{TENANT}-room-{}",
                    bedside_media_node::placement::room_key("placed-visit-0")
                ))
                .await;
        let mut logs = String::new();
        for pod in media_pods(cluster).await {
            let name = pod.metadata.name.unwrap_or_default();
            let log = pod_log(cluster, &name).await;
            for line in log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("expel") || l.contains("lock"))
            {
                logs.push_str(&format!("{name}: {line}\n"));
            }
        }
        panic!(
            "the meeting's lock and expelled participant are not in its room's lease: {lease:?}\n{logs}\nthe clinician saw: {:?}",
            hit[0].1[0].saw("error")
        );
    }
    // Left only now: had it left first, there would be nobody to expel.
    let _ = tokio::time::timeout(Duration::from_secs(2), expelled.leave()).await;
    let before: Vec<Vec<u64>> = spared.iter().map(|(_, peers)| received(peers)).collect();
    let sealed_before_death = pod_log(cluster, &victim).await;
    let died_at = jiff::Timestamp::now();
    Api::<Pod>::namespaced(cluster.client(), NS)
        .delete(&victim, &DeleteParams::default().grace_period(0))
        .await
        .expect("delete the pod");
    let killed = std::time::Instant::now();
    // While the dead pod's participants come back, the other visits are watched every 250 ms:
    // the longest time any of their participants went without a packet from another.
    let done = std::cell::Cell::new(false);
    let rejoin = async {
        let mut back = Vec::new();
        for (room, peers) in hit {
            for peer in peers {
                let _ = tokio::time::timeout(Duration::from_secs(2), peer.leave()).await;
            }
            let r: usize = room["placed-visit-".len()..]
                .parse()
                .expect("a visit number");
            let expelled = |user: &String| r == 0 && user == "u-0-2";
            let users: Vec<String> = users_of(r).into_iter().filter(|u| !expelled(u)).collect();
            // As the web client does: a participant whose new connection drops before media
            // flows comes back again (a rejoin can reach the dying pod in its last seconds,
            // while it still takes rejoins into the meetings it holds).
            let rejoined = loop {
                let mut peers = Vec::new();
                for user in &users {
                    let token = node.token(&room, user, Role::Host);
                    let peer = loop {
                        match RustPeer::try_join(node, &room, &token, from_the_node()).await {
                            Ok(peer) => break peer,
                            Err(why) => {
                                assert!(
                                    killed.elapsed() < Duration::from_secs(60),
                                    "{user} cannot join {room} again a minute after its pod died: {why}"
                                );
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    };
                    peers.push(peer);
                }
                for peer in &mut peers {
                    peer.start_publishing();
                }
                let dropped = |peers: &[RustPeer]| peers.iter().any(|p| !p.signaling_open());
                wait_until(Duration::from_secs(10), || {
                    in_media(&peers, 5) || dropped(&peers)
                })
                .await;
                if !dropped(&peers) {
                    break peers;
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(60),
                    "{room}'s participants keep losing their connection a minute after its pod died"
                );
                for peer in peers {
                    let _ = tokio::time::timeout(Duration::from_secs(2), peer.leave()).await;
                }
            };
            back.push(rejoined);
        }
        let recovered = wait_until(Duration::from_secs(60), || {
            back.iter().all(|peers| in_media(peers, 5))
        })
        .await;
        let took = killed.elapsed();
        done.set(true);
        (recovered, took, back)
    };
    let watch = async {
        // Per pair of participants whose signaling stays up: a participant whose signaling the
        // dead pod carried lost it (and rejoins below, as the web client would).
        let mut longest = Duration::ZERO;
        let mut last: std::collections::HashMap<(usize, usize, usize), (u64, std::time::Instant)> =
            Default::default();
        while !done.get() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            for (r, (_, peers)) in spared.iter().enumerate() {
                for (a, pa) in peers.iter().enumerate() {
                    for (b, pb) in peers.iter().enumerate() {
                        if a == b || !pa.signaling_open() || !pb.signaling_open() {
                            continue;
                        }
                        let now = pa.packets_from(&pb.participant_id);
                        let entry = last
                            .entry((r, a, b))
                            .or_insert((now, std::time::Instant::now()));
                        if now > entry.0 {
                            *entry = (now, std::time::Instant::now());
                        }
                        longest = longest.max(entry.1.elapsed());
                    }
                }
            }
        }
        longest
    };
    let ((recovered, took, back), longest_gap) = futures::join!(rejoin, watch);
    if !(recovered && took < Duration::from_secs(15)) {
        panic!(
            "the dead pod's participants are back in media within 15 s (took {took:?}; \
             recovered: {recovered}); what each rejoined participant has:\n{}\nthe pods' warnings:\n{}",
            rejoined_media(&back),
            pod_warnings(cluster).await
        );
    }
    assert!(
        longest_gap < Duration::from_secs(2),
        "the visits on the other pods go on without a gap between participants whose \
         signaling stayed up (longest: {longest_gap:?})"
    );
    println!("participants of the pod that died back in media after {took:?}");
    // Where visit 0 lives now, it is still locked to newcomers and closed to the expelled.
    for (user, refusal) in [("u-0-2", "expelled"), ("u-0-9", "meeting-locked")] {
        let token = node.token("placed-visit-0", user, Role::Host);
        let started = std::time::Instant::now();
        loop {
            match RustPeer::try_join(node, "placed-visit-0", &token, from_the_node()).await {
                Ok(_) => panic!("{user} got into visit 0 after its pod died"),
                Err(why) if why["code"] == refusal => break,
                Err(why) => assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{user} is refused with {refusal}: {why}"
                ),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let mut spared = spared;
    for ((room, peers), before) in spared.iter_mut().zip(&before) {
        assert!(
            peers.iter().all(|p| p.saw("closing").is_empty()),
            "nobody in {room} was told to leave"
        );
        // Whose signaling the dead pod carried: they join again (the web client does so by
        // itself) and are back in media, like the dead pod's own participants.
        let r: usize = room["placed-visit-".len()..]
            .parse()
            .expect("a visit number");
        let users = users_of(r);
        let mut cut = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            if !peer.signaling_open() {
                cut.push(i);
            }
        }
        for &i in cut.iter().rev() {
            let peer = peers.remove(i);
            let _ = tokio::time::timeout(Duration::from_secs(2), peer.leave()).await;
            let token = node.token(room, &users[i], Role::Host);
            let started = std::time::Instant::now();
            let mut peer = loop {
                match RustPeer::try_join(node, room, &token, from_the_node()).await {
                    Ok(peer) => break peer,
                    Err(why) => assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "{} cannot join {room} again: {why}",
                        users[i]
                    ),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            peer.start_publishing();
            peers.push(peer);
        }
        if cut.is_empty() {
            let after = received(peers);
            assert!(
                after.iter().zip(before).all(|(a, b)| a > b),
                "{room}, on another pod, goes on: {before:?} -> {after:?}"
            );
        } else {
            println!(
                "{room}: {} participant(s) whose signaling the dead pod carried rejoined",
                cut.len()
            );
            assert!(
                wait_until(Duration::from_secs(15), || in_media(peers, 5)).await,
                "{room}: back in media after its relayed participants rejoined"
            );
        }
    }
    for peers in back.into_iter().chain(spared.into_iter().map(|(_, p)| p)) {
        for peer in peers {
            peer.leave().await;
        }
    }
    if let Some(sink) = sink {
        sink.restart().await;
        buffered_records_outlive_their_pod(node, sink, &victim, &sealed_before_death, died_at)
            .await;
    }
}

/// rsyslog over TLS on the node's address, trusted through the Secret the tenant names.
async fn siem(cluster: &TestCluster, dir: &std::path::Path) -> Rsyslog {
    let sink = Rsyslog::start_on(dir, PUBLIC_ADDRESS).await;
    let ca = std::fs::read_to_string(&sink.ca_file).expect("the SIEM's CA");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SIEM_CA, "namespace": NS},
        "stringData": {"ca.crt": ca},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(cluster.client(), NS)
        .create(&Default::default(), &secret)
        .await
        .expect("create the SIEM's CA Secret");
    sink
}

const SIEM_CA: &str = "lakeside-siem-ca";

/// The records a pod sealed while its SIEM was down, then died (SIGKILL, no time to flush),
/// reach the SIEM from its replacement, which carries the same name, the same claim and the same
/// chain on: every record the dead pod wrote is there, and the chain verifies from its first
/// record through the replacement's own.
async fn buffered_records_outlive_their_pod(
    node: &TestNode,
    sink: &Rsyslog,
    pod: &str,
    sealed_before_death: &str,
    died_at: jiff::Timestamp,
) {
    let written: Vec<&str> = sealed_before_death
        .lines()
        .filter(|l| l.starts_with("{\"seq\""))
        .collect();
    let last_written = written
        .iter()
        .filter_map(|l| serde_json::from_str::<bedside_audit::chain::Record>(l).ok())
        .map(|r| r.seq)
        .max()
        .expect("the pod sealed records before it died");
    let chain_of_pod = || -> Vec<(bedside_audit::chain::Record, String)> {
        sink.received()
            .into_iter()
            .filter_map(|(_, line)| {
                let record = serde_json::from_str::<bedside_audit::chain::Record>(&line).ok()?;
                (record.event.place.node.to_string() == pod).then_some((record, line))
            })
            .collect()
    };
    let complete = wait_until_async(Duration::from_secs(60), || async {
        let chain = chain_of_pod();
        let lines: BTreeSet<&str> = chain.iter().map(|(_, l)| l.as_str()).collect();
        written.iter().all(|l| lines.contains(l))
            && chain
                .iter()
                .any(|(r, _)| r.seq > last_written && r.time > died_at)
    })
    .await;
    let chain = chain_of_pod();
    let missing: Vec<&&str> = written
        .iter()
        .filter(|l| !chain.iter().any(|(_, got)| got == **l))
        .collect();
    assert!(
        complete,
        "every record {pod} sealed before it died reaches the SIEM, and its replacement goes on \
         with its chain: {} of {} missing (e.g. {:?}); the SIEM has {} of its records, up to seq {:?}",
        missing.len(),
        written.len(),
        missing.first(),
        chain.len(),
        chain.iter().map(|(r, _)| r.seq).max()
    );
    let key = bedside_audit::AuditKey::new(&node.audit_key).expect("the tenant's audit key");
    let verified = bedside_audit::verify(chain.iter().map(|(_, l)| l.as_str()), &key)
        .unwrap_or_else(|broken| panic!("{pod}'s chain at the SIEM is broken: {broken}"));
    assert_eq!(
        verified.chains.len(),
        1,
        "one chain for the pod: {verified:?}"
    );
    assert_eq!(
        verified.chains[0].first_seq,
        Some(1),
        "nothing missing from its start: {verified:?}"
    );
    println!(
        "{pod}: {} records sealed before it died, {} at the SIEM after its replacement ({} re-delivered)",
        written.len(),
        verified.chains[0].records,
        verified.chains[0].duplicates
    );
}

/// The pod's audit buffers are on its own claim, bound to a volume.
async fn buffers_on_a_bound_claim(cluster: &TestCluster, pod: &str) {
    let claim_name = format!("audit-buffer-{pod}");
    let pod_spec = Api::<Pod>::namespaced(cluster.client(), NS)
        .get(pod)
        .await
        .expect("pod")
        .spec
        .expect("pod spec");
    assert!(
        pod_spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == "audit-buffer"
                && v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == claim_name)),
        "{pod} keeps its audit buffers on {claim_name}: {:?}",
        pod_spec.volumes
    );
    let claim =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(cluster.client(), NS)
            .get(&claim_name)
            .await
            .expect("the claim");
    let phase = claim.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Bound"), "{claim_name} is bound");
}

/// The TLS Secret the tenant names: valid for the addresses the test connects to.
async fn tls_secret(cluster: &TestCluster) -> Vec<u8> {
    let mut names = vec![PUBLIC_ADDRESS.to_string()];
    names.extend((1..=4).map(|i| format!("{LOAD_BALANCER_NET}.{i}")));
    pod_tenant::tls_secret(cluster, &names).await
}

/// The lakeside example with `replicas` media nodes from the test image (or, installed from
/// the manifest, the operator's default), exposed as asked.
async fn create_tenant(
    cluster: &TestCluster,
    replicas: i32,
    exposure: Exposure,
    install: Install,
    siem: Option<&Rsyslog>,
) {
    let image = (install == Install::InProcess).then_some(IMAGE);
    let service_type = format!("{exposure:?}");
    let Some(siem) = siem else {
        return pod_tenant::create(cluster, replicas, &service_type, image).await;
    };
    let audit = json!({
        "sinks": [
            {"stdout": {}},
            {"syslog": {"address": format!("{}:{}", siem.ip, siem.port), "caSecret": SIEM_CA}},
        ],
        "storage": {},
    });
    let mut doc = pod_tenant::tenant_doc(replicas, &service_type, image, audit);
    // A CPU limit of one core (and a small request, so three pods fit a 2-core machine).
    doc["spec"]["mediaNodes"]["resources"] = json!({
        "requests": {"cpu": "100m"},
        "limits": {"cpu": "1"},
    });
    pod_tenant::create_from(cluster, doc).await;
}

/// What a platform engineer would look at when the tenant is not Ready: its conditions, the
/// media pods' states and the addresses written so far.
async fn explain(cluster: &TestCluster) -> String {
    let tenant = pod_tenant::conditions(cluster).await;
    let pods: Vec<String> = media_pods(cluster)
        .await
        .iter()
        .map(|p| {
            let statuses = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            let states: Vec<String> = statuses
                .iter()
                .map(|c| format!("ready={} restarts={}", c.ready, c.restart_count))
                .collect();
            format!(
                "{}: {states:?}",
                p.metadata.name.clone().unwrap_or_default()
            )
        })
        .collect();
    format!(
        "tenant: {tenant}\npods: {pods:?}\naddresses: {:?}",
        addresses(cluster).await
    )
}

/// The operator installed from the manifest: its leader Ready (the standby never is) and the
/// CRD served.
async fn operator_pod_ready(cluster: &TestCluster) {
    eventually(
        "the operator's leader pod Ready",
        Duration::from_secs(180),
        || async {
            let pods = Api::<Pod>::namespaced(cluster.client(), "bedside-system")
                .list(&ListParams::default().labels("app.kubernetes.io/name=bedside-operator"))
                .await
                .ok()?;
            pods.items
                .iter()
                .any(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c.ready))
                })
                .then_some(())
        },
    )
    .await;
}

/// (pod, advertised address), by pod name.
async fn addresses(cluster: &TestCluster) -> Vec<(String, String)> {
    Api::<ConfigMap>::namespaced(cluster.client(), NS)
        .get("lakeside-behavioral-media-addresses")
        .await
        .ok()
        .and_then(|c| c.data)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

async fn pod_log(cluster: &TestCluster, pod: &str) -> String {
    Api::<Pod>::namespaced(cluster.client(), NS)
        .logs(pod, &LogParams::default())
        .await
        .unwrap_or_else(|e| format!("<no log: {e}>"))
}

/// The pod's media counters (packets, connections, failures), read from its metrics port.
async fn pod_counters(cluster: &TestCluster, pod: &str) -> String {
    let Ok(pod) = Api::<Pod>::namespaced(cluster.client(), NS).get(pod).await else {
        return "<no pod>".into();
    };
    let text = match pod_tenant::pod_metrics(&pod).await {
        Ok(text) => text,
        Err(why) => return why,
    };
    text.lines()
        .filter(|l| {
            l.starts_with("bedside_media_packets_total")
                || l.starts_with("bedside_media_connection")
                || l.starts_with("bedside_media_srtp")
                || (l.starts_with("bedside_media_joins_forwarded_total") && !l.ends_with(" 0"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
