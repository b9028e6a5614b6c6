//! Media forwarding load: N publishers x M subscribers on loopback, against the release
//! `bedside-media-node` in its own process, with the `webrtc` crate as the load generator.
//!
//! Each publisher sends 1,150-byte VP8 RTP payloads (a browser's full-size packet) at 1.5
//! Mbit/s (one stamped frame per packet) into its own room; M receive-only subscribers per room get it forwarded. Reported:
//! forwarded streams per CPU-second of the node (utime+stime from /proc), loss, the node's own
//! forwarding delay (its histogram: packet in to the subscribers' datagrams sent),
//! end-to-end delay through both stacks, join to first forwarded packet, node memory per
//! subscriber. Results are printed and written into docs/benchmarks.md.
//!
//! Run with `make bench` (builds the release node first), or
//! `BEDSIDE_MEDIA_NODE_BIN=... cargo bench -p bedside-benches --bench media_forwarding`.
//! `BEDSIDE_BENCH_SCENARIOS="1x10,2x20"` picks the scenarios; `4x25@1` runs one with the node
//! held to one media loop (the default is one per CPU), for the loops' scaling.

use std::time::{Duration, Instant};

use bedside_benches::load::{BenchPeer, Generator, Scenario, unpin_load};
use bedside_tests::media::{TestNode, VideoLoad, cpu_secs};

/// Packets the size a browser sends its video in (1,200 bytes of payload before 2026-12-05:
/// larger than any browser's, so the node split each in two).
const LOAD: VideoLoad = VideoLoad {
    bitrate_bps: 1_500_000,
    packet_bytes: VideoLoad::BROWSER_PACKET_PAYLOAD,
};
/// Each size on the str0m load; the smaller ones also on the `webrtc` crate's, which checks
/// the cheaper generator against the reference (same loss and delay where neither saturates).
const DEFAULT_SCENARIOS: &str = "1x10,1x10/webrtc,2x20,2x20/webrtc,4x25,4x25/webrtc,4x25@1+pin,8x25@1+pin,8x25@1/webrtc+pin,12x25@1+pin,16x25@1+pin,8x25,16x25,16x25/webrtc,24x25";
const WARMUP: Duration = Duration::from_secs(3);
const WINDOW: Duration = Duration::from_secs(10);

/// One scenario's figures; `None` where nothing was measured (no samples, /proc unreadable),
/// which the table prints as "n/a", never as a zero.
#[derive(Debug)]
struct Outcome {
    generator: Generator,
    /// Media loops the node ran.
    loops: usize,
    /// The node held to one core, the generator to the others.
    pinned: bool,
    publishers: usize,
    subscribers: usize,
    streams: usize,
    node_cpu_secs: Option<f64>,
    /// The benchmark's own process: the load generator's peers.
    generator_cpu_secs: Option<f64>,
    /// Streams at 1.5 Mbit/s the node forwarded (from the packets received) per core of it.
    streams_per_core: Option<f64>,
    /// What the publishers sent, as a share of 1.5 Mbit/s each.
    publisher_rate_pct: f64,
    loss_pct: Option<f64>,
    node_delay_p50_us: Option<f64>,
    node_delay_p99_us: Option<f64>,
    e2e_p50_us: Option<u32>,
    e2e_p99_us: Option<u32>,
    join_to_first_p50_ms: Option<u128>,
    join_to_first_max_ms: Option<u128>,
    /// Subscribers that received a first packet (the join figures cover only them).
    joined_with_media: usize,
    memory_per_subscriber_kib: Option<f64>,
    send_dropped: f64,
}

/// Cumulative histogram buckets (upper bound in seconds, count) of one metric.
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

/// Quantile from the difference of two cumulative histograms, interpolated within a bucket;
/// `None` without samples in between.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map(|(_, c)| *c)
                .unwrap_or(0.0);
            (*le, c - b)
        })
        .collect();
    let total = delta.last().map(|(_, c)| *c).unwrap_or(0.0);
    if total == 0.0 {
        return None;
    }
    let target = total * q;
    let mut lower = (0.0, 0.0);
    for (le, c) in delta {
        if c >= target {
            if le.is_infinite() {
                // Past the histogram's top bucket: more than its bound, not the bound.
                return Some(f64::INFINITY);
            }
            let span = c - lower.1;
            let frac = if span > 0.0 {
                (target - lower.1) / span
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, c);
    }
    Some(lower.0)
}

async fn scenario(binary: &std::path::Path, scenario: Scenario) -> Outcome {
    let (mut node, pinned) = scenario.spawn_node(binary).await;
    let pid = node.pid();
    let Scenario {
        publishers,
        per_room,
        generator,
        ..
    } = scenario;
    let loops = node.metric("bedside_media_loops").await as usize;
    let pubs = generator.publishers(&node, publishers, LOAD).await;
    let rss_before = bedside_benches::proc_status_kib(pid, "VmRSS:");
    let mut subs = Vec::new();
    for (i, publisher) in pubs.iter().enumerate() {
        let room = format!("bench-{i}");
        for j in 0..per_room {
            let joined_at = Instant::now();
            let s = generator
                .join(&node, &room, &format!("sub-{i}-{j}"), None)
                .await;
            subs.push((s, joined_at, publisher.participant_id().to_string()));
        }
    }
    tokio::time::sleep(WARMUP).await;
    let rss_after = bedside_benches::proc_status_kib(pid, "VmRSS:");

    let join_to_first: Vec<u128> = {
        let mut v: Vec<u128> = subs
            .iter()
            .filter_map(|(s, joined_at, publisher)| {
                let r = s.received().lock().ok()?;
                r.first_stamped_at
                    .get(publisher)
                    .map(|t| t.saturating_duration_since(*joined_at).as_millis())
            })
            .collect();
        v.sort_unstable();
        v
    };

    // The measured window.
    for (s, _, _) in &subs {
        if let Ok(mut r) = s.received().lock() {
            r.latencies_us.clear();
        }
    }
    let received_before = stamped_total(&subs);
    let sent_before: Vec<u64> = pubs.iter().map(sent).collect();
    let metrics_before = node.metrics().await;
    let dropped_before = node.metric("bedside_media_send_dropped_total").await;
    let cpu_before = cpu_secs(pid);
    let generator_before = cpu_secs(std::process::id());
    tokio::time::sleep(WINDOW).await;
    let cpu_after = cpu_secs(pid);
    let generator_after = cpu_secs(std::process::id());
    let metrics_after = node.metrics().await;
    let dropped_after = node.metric("bedside_media_send_dropped_total").await;
    let sent: Vec<u64> = pubs
        .iter()
        .zip(&sent_before)
        .map(|(p, b)| sent(p) - b)
        .collect();
    // Frames in flight at the window's edges cancel out over 10 s at these rates.
    let received = stamped_total(&subs) - received_before;
    let expected: u64 = sent.iter().map(|s| s * per_room as u64).sum();
    let mut latencies: Vec<u32> = subs
        .iter()
        .flat_map(|(s, _, _)| {
            s.received()
                .lock()
                .map(|r| r.latencies_us.clone())
                .unwrap_or_default()
        })
        .collect();
    latencies.sort_unstable();

    let node_cpu = cpu_after.zip(cpu_before).map(|(a, b)| a - b);
    let streams = publishers * per_room;
    let delay_before = buckets(&metrics_before, "bedside_media_forward_delay_seconds");
    let delay_after = buckets(&metrics_after, "bedside_media_forward_delay_seconds");
    let outcome = Outcome {
        generator,
        loops,
        pinned,
        publishers,
        subscribers: streams,
        streams,
        node_cpu_secs: node_cpu,
        generator_cpu_secs: generator_after.zip(generator_before).map(|(a, b)| a - b),
        // Counted in what reached the subscribers, not what the scenario asked for: a
        // generator short of CPU sends less than 1.5 Mbit/s per publisher.
        streams_per_core: node_cpu
            .filter(|cpu| *cpu > 0.0)
            .map(|cpu| streams_carried(received) / (cpu / WINDOW.as_secs_f64())),
        publisher_rate_pct: publisher_rate_pct(&sent),
        loss_pct: (expected > 0)
            .then(|| (1.0 - received as f64 / expected as f64).max(0.0) * 100.0),
        node_delay_p50_us: quantile(&delay_before, &delay_after, 0.5).map(|s| s * 1e6),
        node_delay_p99_us: quantile(&delay_before, &delay_after, 0.99).map(|s| s * 1e6),
        e2e_p50_us: bedside_benches::percentile(&latencies, 0.5),
        e2e_p99_us: bedside_benches::percentile(&latencies, 0.99),
        join_to_first_p50_ms: bedside_benches::percentile(&join_to_first, 0.5),
        join_to_first_max_ms: join_to_first.last().copied(),
        joined_with_media: join_to_first.len(),
        memory_per_subscriber_kib: rss_after
            .zip(rss_before)
            .map(|(a, b)| (a - b) / streams as f64),
        send_dropped: dropped_after - dropped_before,
    };
    for p in pubs {
        p.leave().await;
    }
    for (s, _, _) in subs {
        s.leave().await;
    }
    node.shutdown(Duration::from_secs(3)).await;
    if pinned {
        unpin_load();
    }
    outcome
}

/// The node's CPU over `WINDOW` with no client at all (stdout audit, as the dev default and a
/// tenant auditing to the cluster's log collector): `None` when /proc cannot be read.
async fn idle_cpu(binary: &std::path::Path) -> Option<f64> {
    let mut node = TestNode::spawn(binary).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cpu_secs(node.pid())?;
    tokio::time::sleep(WINDOW).await;
    let after = cpu_secs(node.pid())?;
    node.shutdown(Duration::from_secs(3)).await;
    Some(after - before)
}

/// Stamped packets a publisher has sent so far.
fn sent(publisher: &BenchPeer) -> u64 {
    publisher
        .video_sent()
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Stamped frames every subscriber got from its publisher.
fn stamped_total(subs: &[(BenchPeer, Instant, String)]) -> u64 {
    subs.iter()
        .map(|(s, _, publisher)| {
            s.received()
                .lock()
                .map(|r| r.stamped.get(publisher).copied().unwrap_or(0))
                .unwrap_or(0)
        })
        .sum()
}

/// Packets a second of one stream at `LOAD`.
fn packets_per_second() -> f64 {
    LOAD.bitrate_bps as f64 / (LOAD.packet_bytes as f64 * 8.0)
}

/// How many streams at `LOAD` the `received` packets of the window make.
fn streams_carried(received: u64) -> f64 {
    received as f64 / WINDOW.as_secs_f64() / packets_per_second()
}

fn publisher_rate_pct(sent: &[u64]) -> f64 {
    let nominal = packets_per_second() * WINDOW.as_secs_f64() * sent.len().max(1) as f64;
    sent.iter().sum::<u64>() as f64 / nominal * 100.0
}

/// A node delay in µs; past the histogram's top bucket (100 ms), only that it is longer.
fn delay(us: f64) -> String {
    if us.is_infinite() {
        "> 100 ms".into()
    } else {
        format!("{us:.0} µs")
    }
}

fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| publishers x subscribers | load generator | media loops | forwarded streams | node CPU (cores) | generator CPU (cores) | publishers' rate | streams per core | loss | node delay p50 / p99 | end-to-end p50 / p99 | join to first packet p50 / max | node memory per subscriber | send drops |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let na = || "n/a".to_string();
        let joins = match (o.join_to_first_p50_ms, o.join_to_first_max_ms) {
            (Some(p50), Some(max)) if o.joined_with_media == o.subscribers => {
                format!("{p50} ms / {max} ms")
            }
            (Some(p50), Some(max)) => format!(
                "{p50} ms / {max} ms ({} of {} got media)",
                o.joined_with_media, o.subscribers
            ),
            _ => na(),
        };
        let pair = |a: Option<String>, b: Option<String>| match (a, b) {
            (Some(a), Some(b)) => format!("{a} / {b}"),
            _ => na(),
        };
        out.push_str(&format!(
            "| {} x {} | {} | {} | {} | {} | {} | {:.0}% | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            o.publishers,
            o.subscribers / o.publishers.max(1),
            o.generator.name(),
            if o.pinned {
                format!("{}, node on 1 core", o.loops)
            } else {
                o.loops.to_string()
            },
            o.streams,
            o.node_cpu_secs
                .map_or_else(na, |c| format!("{:.2}", c / WINDOW.as_secs_f64())),
            o.generator_cpu_secs
                .map_or_else(na, |c| format!("{:.2}", c / WINDOW.as_secs_f64())),
            o.publisher_rate_pct,
            o.streams_per_core.map_or_else(na, |s| format!("{s:.0}")),
            o.loss_pct.map_or_else(na, |l| format!("{l:.2}%")),
            pair(
                o.node_delay_p50_us.map(delay),
                o.node_delay_p99_us.map(delay)
            ),
            pair(
                o.e2e_p50_us
                    .map(|d| format!("{:.1} ms", f64::from(d) / 1000.0)),
                o.e2e_p99_us
                    .map(|d| format!("{:.1} ms", f64::from(d) / 1000.0))
            ),
            joins,
            o.memory_per_subscriber_kib
                .map_or_else(na, |m| format!("{m:.0} KiB")),
            o.send_dropped,
        ));
    }
    out
}

fn main() {
    let binary = bedside_benches::media_node_binary();
    if !binary.exists() {
        eprintln!(
            "{} is missing: run `make bench` (it builds the release node) or set BEDSIDE_MEDIA_NODE_BIN",
            binary.display()
        );
        std::process::exit(2);
    }
    let scenarios: Vec<Scenario> = std::env::var("BEDSIDE_BENCH_SCENARIOS")
        .unwrap_or_else(|_| DEFAULT_SCENARIOS.into())
        .split(',')
        .filter_map(|spec| Scenario::parse(spec, Generator::Str0m))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    eprintln!("media_forwarding: the idle node ...");
    let idle = runtime.block_on(idle_cpu(&binary));
    let mut outcomes = Vec::new();
    for s in scenarios {
        eprintln!("media_forwarding: {s:?} ...");
        let outcome = runtime.block_on(scenario(&binary, s));
        eprintln!("{outcome:?}");
        outcomes.push(outcome);
    }
    let mut table = table(&outcomes);
    table.push_str(&match idle {
        Some(secs) => format!(
            "\nIdle node (no client, stdout audit): {secs:.2} s of CPU in {} s ({:.1}% of a core).\n",
            WINDOW.as_secs(),
            secs / WINDOW.as_secs_f64() * 100.0
        ),
        None => "\nIdle node: n/a (/proc unreadable).\n".into(),
    });
    println!(
        "\nmedia_forwarding (1,200-byte VP8 RTP at 1.5 Mbit/s per publisher, loopback, {} s window)\n",
        WINDOW.as_secs()
    );
    println!("{table}");
    println!(
        "Goals: >= 2,000 streams per core (LiveKit publishes about 190 per vCPU), node p99 < 1 ms, join to first packet < 1 s, 0 loss below saturation."
    );
    bedside_benches::write_docs_table("media_forwarding", &table);
}
