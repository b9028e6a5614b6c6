//! Hostile clients against one media node while two real calls run on it: 5,000 idle sockets
//! (half raw TCP that never start TLS, half WebSockets that never join), 1 MiB frames, joined
//! clients flooding candidates and offers with hundreds of m-lines, and a flood of forged
//! tokens, all at once, from loopback addresses standing for 40 client networks.
//!
//! Reported: each call's loss during the attack, the node's memory (peak and after), whether it
//! stayed up, how each attack was turned away, how many audit records the attack cost, and
//! whether a new call joins afterwards. The node runs with its default client limits.
//!
//! Run: `make bench` (builds the release node), or
//! `cargo bench -p bedside-benches --bench hostile_load` after
//! `cargo build --release -p bedside-media-node`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bedside_benches::{print_table, write_docs_table};
use bedside_crds::join::Role;
use bedside_tests::media::{PeerOptions, RustPeer, Signal, TestNode, VideoLoad, sign};
use serde_json::json;

const LOAD: VideoLoad = VideoLoad {
    bitrate_bps: 1_000_000,
    packet_bytes: 1_200,
};
/// How long the attack lasts; the calls are measured over it.
const ATTACK: Duration = Duration::from_secs(20);
const IDLE_SOCKETS: usize = 5_000;
const FORGED_JOINS: usize = 2_000;

/// Client network `n` (1..=254 of 127.0.0.0/24 beyond the calls' 127.0.0.1).
fn network(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A publisher and a receiver in `room`, from the calls' own network.
async fn real_call(node: &TestNode, room: &str) -> (RustPeer, RustPeer) {
    let token = node.token(room, &format!("{room}-pub"), Role::Host);
    let mut publisher = RustPeer::join(node, room, &token, PeerOptions::video(LOAD)).await;
    publisher.start_video();
    let token = node.token(room, &format!("{room}-sub"), Role::Host);
    let receiver = RustPeer::join(node, room, &token, PeerOptions::receive_only()).await;
    (publisher, receiver)
}

fn stamped(receiver: &RustPeer, from: &str) -> u64 {
    receiver
        .received
        .lock()
        .map(|r| r.stamped.get(from).copied().unwrap_or(0))
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    refused: AtomicU64,
}

/// Half raw TCP sockets that never start TLS, half WebSockets that never join; each network
/// opens up to its share and beyond. Returns the sockets so they stay open.
async fn idle_sockets(
    node: &TestNode,
    tally: Arc<Tally>,
) -> (Vec<tokio::net::TcpStream>, Vec<Signal>) {
    let (mut raw, mut upgraded) = (Vec::new(), Vec::new());
    for i in 0..IDLE_SOCKETS {
        let from = network(2 + (i % 25) as u8);
        if i % 2 == 0 {
            let socket = tokio::net::TcpSocket::new_v4().and_then(|s| {
                s.bind((from, 0).into())?;
                Ok(s)
            });
            match socket {
                Ok(s) => match s.connect(node.signaling).await {
                    Ok(stream) => {
                        tally.opened.fetch_add(1, Ordering::Relaxed);
                        raw.push(stream);
                    }
                    Err(_) => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Err(_) => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            match Signal::try_connect_from(node, Some(from)).await {
                Ok(signal) => {
                    tally.opened.fetch_add(1, Ordering::Relaxed);
                    upgraded.push(signal);
                }
                Err(_) => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    (raw, upgraded)
}

/// Clients sending 1 MiB frames: how many frames the node took before closing.
async fn big_frames(node: &TestNode) -> (usize, usize) {
    let (mut closed, mut sent) = (0, 0);
    let frame = "x".repeat(1 << 20);
    for _ in 0..50 {
        let Ok(mut s) = Signal::try_connect_from(node, Some(network(30))).await else {
            continue;
        };
        for _ in 0..4 {
            if !s.try_send_text(frame.clone()).await {
                break;
            }
            sent += 1;
        }
        if tokio::time::timeout(Duration::from_secs(2), s.recv_any())
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    (sent, closed)
}

/// Joined clients flooding candidates and huge offers: (clients, closed by the node, the
/// codes they were closed with).
async fn floods(node: &TestNode) -> (usize, usize, Vec<String>) {
    let (mut closed, mut codes) = (0, std::collections::BTreeSet::new());
    let candidate = json!({"v": 1, "type": "candidate",
        "candidate": "candidate:1 1 udp 2130706431 169.254.169.254 80 typ host"});
    let offer = json!({"v": 1, "type": "offer",
        "sdp": format!("v=0\r\n{}", "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(400))});
    for i in 0..20 {
        let Ok(mut s) = Signal::try_connect_from(node, Some(network(31))).await else {
            continue;
        };
        let room = format!("flood-{i}");
        let token = node.token(&room, &format!("flooder-{i}"), Role::Host);
        if s.join(&room, &token).await["type"] != "joined" {
            continue;
        }
        for n in 0..1_000 {
            let message = if n % 10 == 0 { &offer } else { &candidate };
            if !s.try_send_text(message.to_string()).await {
                break;
            }
        }
        // Read what the node said until it closes the connection.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), s.recv_any()).await {
                Ok(Some(m)) if m["fatal"] == true => {
                    codes.insert(m["code"].as_str().unwrap_or("?").to_string());
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    closed += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    (20, closed, codes.into_iter().collect())
}

/// Forged tokens from ten networks: (attempts, refused as rate limited).
async fn forged_joins(node: &TestNode) -> (usize, usize) {
    let mut limited = 0;
    for i in 0..FORGED_JOINS {
        let Ok(mut s) = Signal::try_connect_from(node, Some(network(40 + (i % 10) as u8))).await
        else {
            continue;
        };
        let token = sign(
            &node.tenant,
            &[9u8; 32],
            "visit-x",
            "u-forged",
            Role::Host,
            600,
        );
        let answer = s.join("visit-x", &token).await;
        if answer["code"] == "too-many-attempts" {
            limited += 1;
        }
    }
    (FORGED_JOINS, limited)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let binary = bedside_benches::media_node_binary();
    if !binary.is_file() {
        eprintln!(
            "{} is missing: run `make bench`, which builds it first",
            binary.display()
        );
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let material = bedside_media_node::node::NodeSetup::generated(
        bedside_media_node::config::dev_default(),
        "hostile-node".into(),
    )
    .expect("node material");
    let mut node = TestNode::spawn_in(&binary, dir.path(), &material, "warn", |_| {}).await;
    let pid = node.pid();
    let calls = [
        real_call(&node, "call-a").await,
        real_call(&node, "call-b").await,
    ];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before = bedside_benches::proc_status_kib(pid, "VmRSS:");
    let audit_before = audit_lines(dir.path());
    let counts = |calls: &[(RustPeer, RustPeer)]| -> Vec<(u64, u64)> {
        calls
            .iter()
            .map(|(p, r)| {
                (
                    p.video_sent.load(Ordering::Relaxed),
                    stamped(r, &p.participant_id),
                )
            })
            .collect()
    };
    let before = counts(&calls);

    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let attack = async {
        tokio::join!(
            idle_sockets(&node, tally.clone()),
            big_frames(&node),
            floods(&node),
            forged_joins(&node),
        )
    };
    let ((raw, upgraded), frames, floods, forged) = attack.await;
    let attacked_for = started.elapsed();
    if attacked_for < ATTACK {
        tokio::time::sleep(ATTACK - attacked_for).await;
    }
    let after = counts(&calls);
    let rss_peak = bedside_benches::proc_status_kib(pid, "VmHWM:");
    drop((raw, upgraded));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = bedside_benches::proc_status_kib(pid, "VmRSS:");
    let audit_records = audit_lines(dir.path()) - audit_before;
    let refusing = node.metric("bedside_audit_refusing_joins").await;
    let alive = std::fs::metadata(format!("/proc/{pid}")).is_ok();
    let newcomer = real_call(&node, "after").await;
    let joins_after = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if stamped(&newcomer.1, &newcomer.0.participant_id) > 50 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or(false);

    let loss: Vec<String> = before
        .iter()
        .zip(&after)
        .map(|((s0, r0), (s1, r1))| {
            let (sent, received) = (s1 - s0, r1 - r0);
            format!(
                "{:.2}%",
                (1.0 - received as f64 / sent.max(1) as f64).max(0.0) * 100.0
            )
        })
        .collect();
    let mib = |k: Option<f64>| k.map_or("n/a".to_string(), |k| format!("{:.0} MiB", k / 1024.0));
    let rows = vec![
        vec!["measure".to_string(), "result".to_string()],
        vec![
            "loss of the two calls during the attack".into(),
            loss.join(" / "),
        ],
        vec![
            format!("idle sockets opened of {IDLE_SOCKETS} (25 networks)"),
            format!(
                "{} held, {} refused (per-network and node limits)",
                tally.opened.load(Ordering::Relaxed),
                tally.refused.load(Ordering::Relaxed)
            ),
        ],
        vec![
            "1 MiB frames sent (50 clients, up to 4 each)".into(),
            format!(
                "{} sent, {} connections closed at the first",
                frames.0, frames.1
            ),
        ],
        vec![
            "joined clients flooding candidates and 400-m-line offers".into(),
            format!(
                "{} of {} closed by the node ({})",
                floods.1,
                floods.0,
                floods.2.join(", ")
            ),
        ],
        vec![
            "forged-token joins (10 networks)".into(),
            format!(
                "{} of {} rate limited before the token was read",
                forged.1, forged.0
            ),
        ],
        vec![
            "audit records the attack cost".into(),
            format!("{audit_records} (buffer refusing joins: {refusing})"),
        ],
        vec![
            "node memory: before / peak / after".into(),
            format!(
                "{} / {} / {}",
                mib(rss_before),
                mib(rss_peak),
                mib(rss_after)
            ),
        ],
        vec![
            "node still up; a new call gets media".into(),
            format!("{alive}; {joins_after}"),
        ],
    ];
    print_table(
        &format!(
            "Hostile clients against one node for {:.0} s",
            started.elapsed().as_secs_f64()
        ),
        &rows,
    );
    let mut table = String::new();
    for (i, row) in rows.iter().enumerate() {
        table.push_str(&format!("| {} |\n", row.join(" | ")));
        if i == 0 {
            table.push_str("|---|---|\n");
        }
    }
    write_docs_table("hostile_load", &table);
    for (publisher, receiver) in calls.into_iter().chain([newcomer]) {
        publisher.leave().await;
        receiver.leave().await;
    }
    node.shutdown(Duration::from_secs(3)).await;
}

fn audit_lines(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("stdout.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}
