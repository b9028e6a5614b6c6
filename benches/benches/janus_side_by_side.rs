//! bedside and Janus forwarding the same load, in one run, on the same cores: N publishers,
//! each alone in a room with M receive-only subscribers, the same peers (str0m load peers, or
//! with `/webrtc` the `webrtc` crate's) and the same 1,150-byte VP8 packets at 1.5 Mbit/s as
//! `media_forwarding`. Reported for each SFU:
//! its CPU (utime+stime of its process from /proc, all threads), CPU per forwarded stream and
//! the ratio bedside / Janus, loss, end-to-end delay, memory per subscriber. Results are
//! printed and written into docs/benchmarks.md.
//!
//! Janus ignores loopback, so the whole run happens in a network namespace of its own with a
//! veth pair (TESTBED.md): Janus's ICE, its API and its peers on one end's address; bedside
//! and its peers stay on the namespace's loopback. Both addresses are local, so both SFUs'
//! packets take the same loopback path through the kernel.
//!
//! `cargo bench -p bedside-benches --bench janus_side_by_side` after `cargo build --release -p
//! bedside-media-node`; `BEDSIDE_BENCH_SCENARIOS="2x20,4x25/webrtc,8x25+pin"` picks the
//! scenarios, as in `media_forwarding` (`+pin`: each SFU on CPU 0 and the load on the others).
//! Needs root (namespaces) and Debian's `janus` package.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bedside_benches::load::{BenchPeer, Generator, Scenario, pin_apart, unpin_load};
use bedside_tests::browser::Netns;
use bedside_tests::janus::{JanusPeer, JanusServer, Stack};
use bedside_tests::media::{PeerOptions, Received, VideoLoad, cpu_secs};

const LOAD: VideoLoad = VideoLoad {
    bitrate_bps: 1_500_000,
    packet_bytes: VideoLoad::BROWSER_PACKET_PAYLOAD,
};
/// Below the table's 4 x 25 both the load's stacks keep up; above it only the str0m one does,
/// and the pinned rows give each SFU one core of its own.
const DEFAULT_SCENARIOS: &str = "1x10,2x20,4x25,4x25/webrtc,8x25+pin,16x25+pin";
const WARMUP: Duration = Duration::from_secs(3);
const WINDOW: Duration = Duration::from_secs(10);
/// The veth pair's ends. Janus's ICE and its peers both use the first: with the peers'
/// candidates on the other end's address Janus's ICE never pairs them (its agent stays in
/// checking, with the `webrtc` crate's peers as with aiortc's), while on its own address it
/// connects at once. Both ends are in the same namespace, so either path is the kernel's local
/// delivery, as bedside's loopback is.
const JANUS_SIDE: (&str, Ipv4Addr) = ("v0", Ipv4Addr::new(10, 99, 0, 1));
const OTHER_SIDE: (&str, Ipv4Addr) = ("v1", Ipv4Addr::new(10, 99, 0, 2));

/// One SFU's figures for one scenario; `None` where nothing was measured.
#[derive(Debug, Default)]
struct Outcome {
    /// Held to one core, the load on the others.
    pinned: bool,
    cpu_secs: Option<f64>,
    loss_pct: Option<f64>,
    e2e_p50_us: Option<u32>,
    e2e_p99_us: Option<u32>,
    memory_per_subscriber_kib: Option<f64>,
}

/// The peers of one run, whichever SFU they use: what the publishers sent and what the
/// subscribers got.
struct Load<'a> {
    sent: Vec<&'a std::sync::atomic::AtomicU64>,
    received: Vec<&'a std::sync::Mutex<Received>>,
}

impl Load<'_> {
    fn sent(&self) -> u64 {
        self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }

    fn stamped(&self) -> u64 {
        self.received
            .iter()
            .filter_map(|r| r.lock().ok().map(|r| r.stamped.values().sum::<u64>()))
            .sum()
    }

    fn take_latencies(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .received
            .iter()
            .filter_map(|r| {
                r.lock()
                    .ok()
                    .map(|mut r| std::mem::take(&mut r.latencies_us))
            })
            .flatten()
            .collect();
        all.sort_unstable();
        all
    }

    /// Warm-up, then the measured window on the SFU process `pid`; `rss_before` was read
    /// before the subscribers joined.
    async fn measure(&self, pid: u32, per_room: usize, rss_before: Option<f64>) -> Outcome {
        tokio::time::sleep(WARMUP).await;
        let rss_after = bedside_benches::proc_status_kib(pid, "VmRSS:");
        self.take_latencies();
        let (sent_before, received_before) = (self.sent(), self.stamped());
        let cpu_before = cpu_secs(pid);
        tokio::time::sleep(WINDOW).await;
        let cpu = cpu_secs(pid).zip(cpu_before).map(|(a, b)| a - b);
        let expected = (self.sent() - sent_before) * per_room as u64;
        let received = self.stamped() - received_before;
        let latencies = self.take_latencies();
        let subscribers = (self.received.len() as f64).max(1.0);
        Outcome {
            pinned: false,
            cpu_secs: cpu,
            loss_pct: (expected > 0)
                .then(|| (1.0 - received as f64 / expected as f64).max(0.0) * 100.0),
            e2e_p50_us: bedside_benches::percentile(&latencies, 0.5),
            e2e_p99_us: bedside_benches::percentile(&latencies, 0.99),
            memory_per_subscriber_kib: rss_after
                .zip(rss_before)
                .map(|(a, b)| (a - b) / subscribers),
        }
    }
}

async fn bedside(binary: &std::path::Path, scenario: Scenario) -> Outcome {
    let (mut node, pinned) = scenario.spawn_node(binary).await;
    let pid = node.pid();
    let Scenario {
        publishers,
        per_room,
        generator,
        ..
    } = scenario;
    let pubs = generator.publishers(&node, publishers, LOAD).await;
    let rss_before = bedside_benches::proc_status_kib(pid, "VmRSS:");
    let mut subs = Vec::new();
    for i in 0..publishers {
        let room = format!("bench-{i}");
        for j in 0..per_room {
            let user = format!("sub-{i}-{j}");
            subs.push(generator.join(&node, &room, &user, None).await);
        }
    }
    let load = Load {
        sent: pubs.iter().map(BenchPeer::video_sent).collect(),
        received: subs.iter().map(|s| s.received().as_ref()).collect(),
    };
    let outcome = load.measure(pid, per_room, rss_before).await;
    for p in pubs.into_iter().chain(subs) {
        p.leave().await;
    }
    node.shutdown(Duration::from_secs(3)).await;
    if pinned {
        unpin_load();
    }
    Outcome { pinned, ..outcome }
}

async fn janus(scenario: Scenario) -> Outcome {
    let Scenario {
        publishers,
        per_room,
        generator,
        pinned,
        ..
    } = scenario;
    let server = JanusServer::start(JANUS_SIDE.0, JANUS_SIDE.1).await;
    let pid = server.pid();
    // Janus starts a thread per handle: each inherits the pinned affinity.
    let pinned = pinned && pin_apart(pid);
    let (publisher, subscriber) = match generator {
        Generator::Webrtc => {
            let on_janus_side = |options| PeerOptions {
                bind_ip: JANUS_SIDE.1.into(),
                ..options
            };
            (
                Stack::Webrtc(on_janus_side(PeerOptions::video(LOAD))),
                Stack::Webrtc(on_janus_side(PeerOptions::receive_only())),
            )
        }
        Generator::Str0m => (
            Stack::Str0m(JANUS_SIDE.1, LOAD),
            Stack::Str0m(JANUS_SIDE.1, LOAD),
        ),
    };
    let mut pubs = Vec::new();
    for i in 0..publishers {
        pubs.push(JanusPeer::publish(&server, 1000 + i as u64, &publisher).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = bedside_benches::proc_status_kib(pid, "VmRSS:");
    let mut subs = Vec::new();
    for (i, p) in pubs.iter().enumerate() {
        for _ in 0..per_room {
            let room = 1000 + i as u64;
            subs.push(JanusPeer::subscribe(&server, room, p.feed, &subscriber).await);
        }
    }
    let load = Load {
        sent: pubs.iter().map(JanusPeer::video_sent).collect(),
        received: subs.iter().map(JanusPeer::received).collect(),
    };
    let outcome = load.measure(pid, per_room, rss_before).await;
    for p in pubs.into_iter().chain(subs) {
        p.leave().await;
    }
    if pinned {
        unpin_load();
    }
    Outcome { pinned, ..outcome }
}

/// Millicores per forwarded stream.
fn per_stream(o: &Outcome, streams: usize) -> Option<f64> {
    o.cpu_secs
        .map(|cpu| cpu / WINDOW.as_secs_f64() * 1000.0 / streams.max(1) as f64)
}

fn table(rows: &[(Scenario, Outcome, Outcome)]) -> String {
    let mut out = String::from(
        "| publishers x subscribers | load generator | cores | forwarded streams | CPU (cores), bedside / Janus | CPU per stream (millicores), bedside / Janus | bedside / Janus | loss, bedside / Janus | end-to-end p50 / p99, bedside | end-to-end p50 / p99, Janus | memory per subscriber, bedside / Janus |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let na = || "n/a".to_string();
    let ms = |us: Option<u32>| us.map_or_else(na, |d| format!("{:.1} ms", f64::from(d) / 1000.0));
    for (scenario, b, j) in rows {
        let (publishers, per_room) = (scenario.publishers, scenario.per_room);
        let streams = publishers * per_room;
        let generator = scenario.generator.name();
        let placement = match (b.pinned, j.pinned) {
            (true, true) => "each SFU on 1, the load on the other",
            (false, false) => "all shared",
            // Pinning was asked for and failed for one (the bench said why).
            (true, false) => "bedside on 1, Janus shared",
            (false, true) => "Janus on 1, bedside shared",
        };
        let cores = |o: &Outcome| {
            o.cpu_secs
                .map_or_else(na, |c| format!("{:.2}", c / WINDOW.as_secs_f64()))
        };
        let (pb, pj) = (per_stream(b, streams), per_stream(j, streams));
        let ratio = pb
            .zip(pj)
            .filter(|(_, j)| *j > 0.0)
            .map_or_else(na, |(b, j)| format!("{:.2}x", b / j));
        let loss = |o: &Outcome| o.loss_pct.map_or_else(na, |l| format!("{l:.2}%"));
        let memory = |o: &Outcome| {
            o.memory_per_subscriber_kib
                .map_or_else(na, |m| format!("{m:.0} KiB"))
        };
        out.push_str(&format!(
            "| {publishers} x {per_room} | {generator} | {placement} | {streams} | {} / {} | {} / {} | {ratio} | {} / {} | {} / {} | {} / {} | {} / {} |\n",
            cores(b),
            cores(j),
            pb.map_or_else(na, |p| format!("{p:.2}")),
            pj.map_or_else(na, |p| format!("{p:.2}")),
            loss(b),
            loss(j),
            ms(b.e2e_p50_us),
            ms(b.e2e_p99_us),
            ms(j.e2e_p50_us),
            ms(j.e2e_p99_us),
            memory(b),
            memory(j),
        ));
    }
    out
}

fn main() {
    let binary = bedside_benches::media_node_binary();
    if !binary.exists() {
        eprintln!(
            "janus_side_by_side cannot run: {} is missing: run `make bench` (it builds the release node) or set BEDSIDE_MEDIA_NODE_BIN",
            binary.display()
        );
        std::process::exit(2);
    }
    // The peer SFU is optional: `make bench` goes on to the other benchmarks without it.
    let missing = bedside_tests::janus::unavailable().or_else(bedside_tests::browser::unavailable);
    if let Some(why) = missing {
        println!("janus_side_by_side: skipped: {why}");
        return;
    }
    let scenarios: Vec<Scenario> = std::env::var("BEDSIDE_BENCH_SCENARIOS")
        .unwrap_or_else(|_| DEFAULT_SCENARIOS.into())
        .split(',')
        .filter_map(|spec| Scenario::parse(spec, Generator::Str0m))
        .collect();
    let netns = Netns::create();
    netns.add_veth(
        (JANUS_SIDE.0, &JANUS_SIDE.1.to_string()),
        (OTHER_SIDE.0, &OTHER_SIDE.1.to_string()),
    );
    let (done, results) = std::sync::mpsc::channel();
    netns.run(move || async move {
        for scenario in scenarios {
            eprintln!("janus_side_by_side: {scenario:?}, bedside ...");
            let b = bedside(&binary, scenario).await;
            eprintln!("{b:?}\njanus_side_by_side: {scenario:?}, Janus ...");
            let j = janus(scenario).await;
            eprintln!("{j:?}");
            let _ = done.send((scenario, b, j));
        }
    });
    let rows: Vec<_> = results.try_iter().collect();
    let table = table(&rows);
    println!(
        "\njanus_side_by_side (1,150-byte VP8 RTP at 1.5 Mbit/s per publisher, {} s window)\n\n{table}",
        WINDOW.as_secs()
    );
    bedside_benches::write_docs_table("janus_side_by_side", &table);
}
