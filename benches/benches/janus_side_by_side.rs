//! bedside and Janus forwarding the same load, in one run, on the same cores: N publishers,
//! each alone in a room with M receive-only subscribers, the same `webrtc`-crate peers and
//! the same 1,150-byte VP8 packets at 1.5 Mbit/s as `media_forwarding`. Reported for each SFU:
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
//! bedside-media-node`; `BEDSIDE_BENCH_SCENARIOS="2x20,4x25"` picks the scenarios. Needs root
//! (namespaces) and Debian's `janus` package.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bedside_benches::load::{BenchPeer, Generator};
use bedside_tests::browser::Netns;
use bedside_tests::janus::{JanusPeer, JanusServer};
use bedside_tests::media::{PeerOptions, Received, TestNode, VideoLoad, cpu_secs};

const LOAD: VideoLoad = VideoLoad {
    bitrate_bps: 1_500_000,
    packet_bytes: VideoLoad::BROWSER_PACKET_PAYLOAD,
};
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

async fn bedside(binary: &std::path::Path, publishers: usize, per_room: usize) -> Outcome {
    let mut node = TestNode::spawn(binary).await;
    let pid = node.pid();
    // The same stack as Janus's peers: the `webrtc` crate.
    let generator = Generator::Webrtc;
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
    outcome
}

async fn janus(publishers: usize, per_room: usize) -> Outcome {
    let server = JanusServer::start(JANUS_SIDE.0, JANUS_SIDE.1).await;
    let pid = server.pid();
    let options = PeerOptions {
        bind_ip: JANUS_SIDE.1.into(),
        ..PeerOptions::video(LOAD)
    };
    let mut pubs = Vec::new();
    for i in 0..publishers {
        pubs.push(JanusPeer::publish(&server, 1000 + i as u64, options.clone()).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = bedside_benches::proc_status_kib(pid, "VmRSS:");
    let receive_only = PeerOptions {
        bind_ip: JANUS_SIDE.1.into(),
        ..PeerOptions::receive_only()
    };
    let mut subs = Vec::new();
    for (i, publisher) in pubs.iter().enumerate() {
        for _ in 0..per_room {
            let room = 1000 + i as u64;
            let s = JanusPeer::subscribe(&server, room, publisher.feed, receive_only.clone());
            subs.push(s.await);
        }
    }
    let load = Load {
        sent: pubs.iter().map(|p| p.media.video_sent.as_ref()).collect(),
        received: subs.iter().map(|s| s.media.received.as_ref()).collect(),
    };
    let outcome = load.measure(pid, per_room, rss_before).await;
    for p in pubs.into_iter().chain(subs) {
        p.leave().await;
    }
    outcome
}

/// Millicores per forwarded stream.
fn per_stream(o: &Outcome, streams: usize) -> Option<f64> {
    o.cpu_secs
        .map(|cpu| cpu / WINDOW.as_secs_f64() * 1000.0 / streams.max(1) as f64)
}

fn table(rows: &[((usize, usize), Outcome, Outcome)]) -> String {
    let mut out = String::from(
        "| publishers x subscribers | forwarded streams | CPU (cores), bedside / Janus | CPU per stream (millicores), bedside / Janus | bedside / Janus | loss, bedside / Janus | end-to-end p50 / p99, bedside | end-to-end p50 / p99, Janus | memory per subscriber, bedside / Janus |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let na = || "n/a".to_string();
    let ms = |us: Option<u32>| us.map_or_else(na, |d| format!("{:.1} ms", f64::from(d) / 1000.0));
    for ((publishers, per_room), b, j) in rows {
        let streams = publishers * per_room;
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
            "| {publishers} x {per_room} | {streams} | {} / {} | {} / {} | {ratio} | {} / {} | {} / {} | {} / {} | {} / {} |\n",
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
    let scenarios: Vec<(usize, usize)> = std::env::var("BEDSIDE_BENCH_SCENARIOS")
        .unwrap_or_else(|_| "1x10,2x20,4x25,8x25".into())
        .split(',')
        .filter_map(|s| {
            let (p, m) = s.trim().split_once('x')?;
            Some((p.parse().ok()?, m.parse().ok()?))
        })
        .collect();
    let netns = Netns::create();
    netns.add_veth(
        (JANUS_SIDE.0, &JANUS_SIDE.1.to_string()),
        (OTHER_SIDE.0, &OTHER_SIDE.1.to_string()),
    );
    let (done, results) = std::sync::mpsc::channel();
    netns.run(move || async move {
        for (publishers, per_room) in scenarios {
            eprintln!("janus_side_by_side: {publishers} x {per_room}, bedside ...");
            let b = bedside(&binary, publishers, per_room).await;
            eprintln!("{b:?}\njanus_side_by_side: {publishers} x {per_room}, Janus ...");
            let j = janus(publishers, per_room).await;
            eprintln!("{j:?}");
            let _ = done.send(((publishers, per_room), b, j));
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
