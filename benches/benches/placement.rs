//! Rooms placed across pods, on the pod-running cluster (`tests/src/pods.rs`): a 3-replica
//! NodePort tenant with the release media node packed into an image, the operator in this
//! process. Every client connects to the tenant's public signaling endpoint, never a pod.
//!
//! Reported: joins per second (signaling only: connect, join, `joined`) with placement across
//! the three pods; the time from a join request to the first media from the room's other
//! participant (p50 / p99); what placement itself costs a join (the pods' own
//! `bedside_media_placement_seconds`: finding or choosing the room's pod through the Leases,
//! plus reaching it for a join carried on); and the time from a pod being killed (deleted at
//! once, no drain) to its participants receiving media again after they join again, as the web
//! client does by itself (p50 / max over three kills).
//!
//! Run with `make bench` (builds the release node first) or
//! `cargo bench -p bedside-benches --bench placement` after a release build. Needs what the
//! pod-cluster suites need (BEDSIDE_TESTBED_DIR, root); without it, says why and exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bedside_crds::join::Role;
use bedside_tests::TestCluster;
use bedside_tests::media::{PeerOptions, RustPeer, Signal, TestNode, workspace_binary};
use bedside_tests::operator::{RunningOperator, ensure_namespace, install_crd};
use bedside_tests::pod_tenant::{self, IMAGE, NS, PUBLIC_ADDRESS, TENANT};
use bedside_tests::pods::{self, PodCluster};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams};

/// Signaling-only joins for the rate, this many at a time.
const RATE_JOINS: usize = 90;
const RATE_CONCURRENCY: usize = 6;
/// Rooms of two for join-to-media, and for the kills.
const MEDIA_ROOMS: usize = 12;
const KILLS: usize = 3;

#[derive(Debug, Default)]
struct Outcome {
    joins_per_s: f64,
    join_p50_ms: f64,
    join_p99_ms: f64,
    to_media_p50_ms: f64,
    to_media_p99_ms: f64,
    placement_p50_ms: f64,
    placement_p99_ms: f64,
    placements: u64,
    carried_pct: f64,
    pods_used: usize,
    recovery_p50_s: f64,
    recovery_max_s: f64,
    recovered: usize,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn from_the_node() -> PeerOptions {
    PeerOptions {
        bind_ip: PUBLIC_ADDRESS.parse().expect("ip"),
        ..PeerOptions::default()
    }
}

async fn tenant_node(cluster: &TestCluster, cert_pem: Vec<u8>) -> TestNode {
    let service: Service = Api::namespaced(cluster.client(), NS)
        .get(&format!("{TENANT}-signaling"))
        .await
        .expect("signaling Service");
    let port = service
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first()?.node_port)
        .expect("a signaling node port");
    let signaling = format!("{PUBLIC_ADDRESS}:{port}").parse().expect("address");
    pod_tenant::remote_node(cluster, signaling, cert_pem).await
}

/// One signaling-only join: connect, join, `joined`; its time, or `None` if refused.
async fn timed_join(node: &TestNode, room: &str, user: &str) -> Option<f64> {
    let started = Instant::now();
    let mut signal = Signal::try_connect(node).await.ok()?;
    let reply = signal.join(room, &node.token(room, user, Role::Host)).await;
    (reply["type"] == "joined").then(|| started.elapsed().as_secs_f64() * 1000.0)
}

/// Joins per second and per-join latency, `RATE_CONCURRENCY` at a time, three to a room.
async fn join_rate(node: &TestNode, outcome: &mut Outcome) {
    let started = Instant::now();
    let mut latencies = Vec::new();
    for batch in (0..RATE_JOINS).collect::<Vec<_>>().chunks(RATE_CONCURRENCY) {
        let joins = batch.iter().map(|i| {
            let room = format!("rate-{}", i / 3);
            let user = format!("u-rate-{i}");
            async move { timed_join(node, &room, &user).await }
        });
        latencies.extend(futures::future::join_all(joins).await.into_iter().flatten());
    }
    let elapsed = started.elapsed().as_secs_f64();
    outcome.joins_per_s = latencies.len() as f64 / elapsed;
    let latencies = sorted(latencies);
    outcome.join_p50_ms = quantile(&latencies, 0.5);
    outcome.join_p99_ms = quantile(&latencies, 0.99);
}

/// Rooms of two: the first publishes, the second's join request to its first packet from
/// the first. Returns the rooms, with their participants still in them.
async fn join_to_media(node: &TestNode, outcome: &mut Outcome) -> Vec<(String, Vec<RustPeer>)> {
    let mut rooms = Vec::new();
    let mut times = Vec::new();
    for r in 0..MEDIA_ROOMS {
        let room = format!("media-{r}");
        let mut first = RustPeer::join(
            node,
            &room,
            &node.token(&room, &format!("u-{r}-a"), Role::Host),
            from_the_node(),
        )
        .await;
        first.start_publishing();
        let started = Instant::now();
        let mut second = RustPeer::join(
            node,
            &room,
            &node.token(&room, &format!("u-{r}-b"), Role::Host),
            from_the_node(),
        )
        .await;
        second.start_publishing();
        while second.packets_from(&first.participant_id) == 0
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        rooms.push((room, vec![first, second]));
    }
    let times = sorted(times);
    outcome.to_media_p50_ms = quantile(&times, 0.5);
    outcome.to_media_p99_ms = quantile(&times, 0.99);
    rooms
}

/// The pods' metrics text, by pod name.
async fn pod_metrics(cluster: &TestCluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pod in pod_tenant::media_pods(cluster).await {
        if let (Some(name), Ok(text)) = (
            pod.metadata.name.clone(),
            pod_tenant::pod_metrics(&pod).await,
        ) {
            out.insert(name, text);
        }
    }
    out
}

fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Placement's own cost from the pods' histograms (bucket upper bounds, summed over pods).
fn placement_cost(metrics: &BTreeMap<String, String>, outcome: &mut Outcome) {
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    let (mut count, mut carried) = (0.0, 0.0);
    for text in metrics.values() {
        count += sample(text, "bedside_media_placement_seconds_count");
        carried += sample(text, "bedside_media_joins_forwarded_total");
        for line in text
            .lines()
            .filter(|l| l.starts_with("bedside_media_placement_seconds_bucket"))
        {
            let le = line
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("+Inf");
            let micros = le.parse::<f64>().map_or(u64::MAX, |s| (s * 1e6) as u64);
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            *buckets.entry(micros).or_default() += value;
        }
    }
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| **n >= q * count)
            .map_or(f64::NAN, |(le, _)| *le as f64 / 1000.0)
    };
    outcome.placement_p50_ms = at(0.5);
    outcome.placement_p99_ms = at(0.99);
    outcome.placements = count as u64;
    outcome.carried_pct = carried / count.max(1.0) * 100.0;
}

/// Kills the pod holding the first room (deleted at once), lets its participants join again
/// every second until they are back, and returns each one's time from the kill to its first
/// packet from the other. The rooms on other pods stay as they are.
async fn kill_and_recover(
    cluster: &TestCluster,
    node: &TestNode,
    rooms: &mut Vec<(String, Vec<RustPeer>)>,
    round: usize,
) -> Vec<f64> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let lease_holder = pod_tenant::room_holder(cluster, &rooms[0].0).await;
    let Some(victim) = lease_holder else {
        return Vec::new();
    };
    let mut hit = Vec::new();
    let mut kept = Vec::new();
    for (room, peers) in rooms.drain(..) {
        if pod_tenant::room_holder(cluster, &room).await.as_deref() == Some(victim.as_str()) {
            hit.push((room, peers));
        } else {
            kept.push((room, peers));
        }
    }
    *rooms = kept;
    pods.delete(&victim, &DeleteParams::default().grace_period(0))
        .await
        .expect("delete the pod");
    let killed = Instant::now();
    for (_, peers) in hit.iter_mut() {
        for peer in peers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), peer.leave()).await;
        }
    }
    let rejoin = |room: String, user: String| async move {
        let token = node.token(&room, &user, Role::Host);
        loop {
            if let Ok(mut peer) = RustPeer::try_join(node, &room, &token, from_the_node()).await {
                peer.start_publishing();
                return peer;
            }
            if killed.elapsed() > Duration::from_secs(90) {
                panic!("{user} not back in {room} 90 s after its pod died");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let mut times = Vec::new();
    let mut back = Vec::new();
    for (room, _) in &hit {
        let users = [format!("{room}-a-{round}"), format!("{room}-b-{round}")];
        let peers =
            futures::future::join_all(users.iter().map(|u| rejoin(room.clone(), u.clone()))).await;
        back.push((room.clone(), peers));
    }
    let mut pending: Vec<(usize, usize)> = (0..back.len())
        .flat_map(|r| (0..2).map(move |p| (r, p)))
        .collect();
    while !pending.is_empty() && killed.elapsed() < Duration::from_secs(90) {
        pending.retain(|&(r, p)| {
            let peers = &back[r].1;
            let other = &peers[1 - p].participant_id;
            if peers[p].packets_from(other) > 0 {
                times.push(killed.elapsed().as_secs_f64());
                false
            } else {
                true
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rooms.extend(back);
    times
}

async fn measure(cluster: &TestCluster) -> Outcome {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    ensure_namespace(cluster, NS).await.expect("namespace");
    install_crd(cluster).await.expect("CRD");
    let operator = RunningOperator::start(cluster, "operator-0", false)
        .await
        .expect("operator");
    let cert = pod_tenant::tls_secret(cluster, &[PUBLIC_ADDRESS.to_string()]).await;
    pod_tenant::create(cluster, 3, "NodePort", Some(IMAGE)).await;
    pod_tenant::ready(cluster, 3, Duration::from_secs(420))
        .await
        .expect("the tenant Ready with 3 media nodes");
    let node = tenant_node(cluster, cert).await;
    // kube-proxy has the endpoints once a connection succeeds a few times in a row.
    for _ in 0..60 {
        if futures::future::join_all((0..5).map(|_| Signal::try_connect(&node)))
            .await
            .iter()
            .all(Result::is_ok)
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let mut outcome = Outcome::default();
    eprintln!("placement: join rate ...");
    join_rate(&node, &mut outcome).await;
    eprintln!("placement: join to first media ...");
    let mut rooms = join_to_media(&node, &mut outcome).await;
    let metrics = pod_metrics(cluster).await;
    placement_cost(&metrics, &mut outcome);
    outcome.pods_used = metrics
        .values()
        .filter(|t| sample(t, "bedside_media_rooms") > 0.0)
        .count();
    let mut recoveries = Vec::new();
    for round in 0..KILLS {
        eprintln!("placement: kill {} of {KILLS} ...", round + 1);
        recoveries.extend(kill_and_recover(cluster, &node, &mut rooms, round).await);
        pod_tenant::ready(cluster, 3, Duration::from_secs(180)).await;
    }
    let recoveries = sorted(recoveries);
    outcome.recovery_p50_s = quantile(&recoveries, 0.5);
    outcome.recovery_max_s = recoveries.last().copied().unwrap_or(f64::NAN);
    outcome.recovered = recoveries.len();
    for (_, peers) in rooms {
        for peer in peers {
            peer.leave().await;
        }
    }
    let _ = operator.stop().await;
    outcome
}

fn main() {
    if !pods::require_or_skip() {
        std::process::exit(0);
    }
    let cluster = PodCluster::start().unwrap_or_else(|e| panic!("start the cluster: {e}"));
    cluster
        .load_image(IMAGE, &[&workspace_binary("bedside-media-node")])
        .unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let result = Arc::new(Mutex::new(None));
    let out = result.clone();
    cluster.run(move || async move {
        let api = TestCluster::attach(kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let outcome = measure(&api).await;
        if let Ok(mut slot) = out.lock() {
            *slot = Some(outcome);
        }
    });
    let Some(o) = result.lock().ok().and_then(|mut r| r.take()) else {
        eprintln!("placement: no result");
        std::process::exit(1);
    };
    eprintln!("{o:?}");
    let table = format!(
        "| joins per second (3 pods, {RATE_CONCURRENCY} at a time) | join p50 / p99 | join to first media p50 / p99 | placement's cost p50 / p99 (joins, carried) | rooms on pods | pod killed to media again p50 / max ({} participants, {KILLS} kills) |\n\
         |---|---|---|---|---|---|\n\
         | {:.0} | {:.0} ms / {:.0} ms | {:.0} ms / {:.0} ms | ≤ {} ms / ≤ {} ms ({}, {:.0}% carried) | {} of 3 | {:.1} s / {:.1} s |\n",
        o.recovered,
        o.joins_per_s,
        o.join_p50_ms,
        o.join_p99_ms,
        o.to_media_p50_ms,
        o.to_media_p99_ms,
        o.placement_p50_ms,
        o.placement_p99_ms,
        o.placements,
        o.carried_pct,
        o.pods_used,
        o.recovery_p50_s,
        o.recovery_max_s,
    );
    println!("\nplacement (3-replica NodePort tenant on the pod-running cluster)\n\n{table}");
    bedside_benches::write_docs_table("placement", &table);
}
