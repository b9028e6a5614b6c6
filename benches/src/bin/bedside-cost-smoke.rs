//! The CI's guard against unseen slowdowns: the CPU time (from /proc, not wall time, so a
//! busy machine does not make it flaky) of two fixed small workloads, against the figures
//! recorded beside it in `benches/cost-smoke.json`. Fails when one exceeds twice its record,
//! printing both.
//!
//! - the media node forwarding 2 publishers x 10 subscribers for 10 s;
//! - the operator provisioning 100 tenants on a real API server.
//!
//! Both run the debug binaries `make test` builds. When a change makes things legitimately
//! slower or faster, run with `BEDSIDE_COST_SMOKE_RECORD=1`, put the printed figures in
//! `benches/cost-smoke.json` with the date and the reason, and commit them with the change.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bedside_benches::fleet;
use bedside_crds::join::Role;
use bedside_tests::media::{PeerOptions, RustPeer, TestNode, VideoLoad, cpu_secs};
use bedside_tests::{ClusterOptions, TestCluster};
use serde_json::{Value, json};

const LOAD: VideoLoad = VideoLoad {
    bitrate_bps: 1_500_000,
    packet_bytes: 1_200,
};
const WARMUP: Duration = Duration::from_secs(3);
const WINDOW: Duration = Duration::from_secs(10);
const TENANTS: usize = 100;
/// Past this many times the record, the smoke fails.
const TOLERANCE: f64 = 2.0;

fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    if !path.is_file() {
        eprintln!(
            "{} is missing: build it first (`cargo build --workspace --all-features --bins`)",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

/// The node's CPU seconds while it forwards 2 x 10 streams for [`WINDOW`].
async fn node_forwarding() -> f64 {
    let mut node = TestNode::spawn(&binary("bedside-media-node")).await;
    let mut peers = Vec::new();
    for room in ["smoke-0", "smoke-1"] {
        let token = node.token(room, &format!("{room}-pub"), Role::Host);
        let mut publisher = RustPeer::join(&node, room, &token, PeerOptions::video(LOAD)).await;
        publisher.start_video();
        peers.push(publisher);
        for j in 0..10 {
            let token = node.token(room, &format!("{room}-sub-{j}"), Role::Host);
            peers.push(RustPeer::join(&node, room, &token, PeerOptions::receive_only()).await);
        }
    }
    tokio::time::sleep(WARMUP).await;
    let before = cpu_secs(node.pid()).expect("the node's /proc/<pid>/stat");
    tokio::time::sleep(WINDOW).await;
    let after = cpu_secs(node.pid()).expect("the node's /proc/<pid>/stat");
    let forwarded = node.metric("bedside_media_packets_forwarded_total").await;
    assert!(
        forwarded > 0.0,
        "the node forwarded nothing: no figure to compare"
    );
    for peer in peers {
        peer.leave().await;
    }
    node.shutdown(Duration::from_secs(3)).await;
    after - before
}

/// The operator's CPU seconds from its start until [`TENANTS`] tenants are provisioned.
async fn operator_provisioning() -> f64 {
    let cluster = TestCluster::start(ClusterOptions::default())
        .await
        .expect("a control plane (see docs/testing.md)");
    fleet::prepare(&cluster).await;
    let log = std::env::temp_dir().join("bedside-cost-smoke-operator.log");
    let operator = fleet::OperatorProcess::start(&cluster, &binary("bedside-operator"), &log).await;
    let client = cluster.client();
    let started = Instant::now();
    fleet::create_tenants(&client, TENANTS).await;
    let done = fleet::provisioned(&client, TENANTS, started, Duration::from_secs(300)).await;
    assert!(
        done.is_some(),
        "{TENANTS} tenants were not provisioned in 5 minutes"
    );
    cpu_secs(operator.pid()).expect("the operator's /proc/<pid>/stat")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let measured = [
        (
            "node_forwarding_2x10_for_10s_cpu_seconds",
            runtime.block_on(node_forwarding()),
        ),
        (
            "operator_provisioning_100_tenants_cpu_seconds",
            runtime.block_on(operator_provisioning()),
        ),
    ];
    if std::env::var_os("BEDSIDE_COST_SMOKE_RECORD").is_some() {
        let figures: serde_json::Map<String, Value> = measured
            .iter()
            .map(|(name, secs)| (name.to_string(), json!((secs * 100.0).round() / 100.0)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&figures).expect("json"));
        return;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cost-smoke.json");
    let recorded: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("{} is missing or not JSON", path.display()));
    let mut over = Vec::new();
    for (name, secs) in measured {
        let Some(record) = recorded["figures"][name].as_f64() else {
            panic!("{} records no {name}", path.display());
        };
        let verdict = if secs > record * TOLERANCE {
            over.push(name);
            "OVER"
        } else {
            "ok"
        };
        println!(
            "{verdict:>4}  {name}: {secs:.2} s now, {record:.2} s recorded (limit {:.2} s)",
            record * TOLERANCE
        );
    }
    if !over.is_empty() {
        eprintln!(
            "CPU cost more than doubled against {} ({}): find the regression, or, if it is \
             deliberate, re-record with BEDSIDE_COST_SMOKE_RECORD=1 and say why there",
            path.display(),
            over.join(", ")
        );
        std::process::exit(1);
    }
}
