//! The media benchmarks' load, on either of two stacks: the `webrtc` crate (an independent
//! WebRTC implementation, the reference) or str0m peers in RTP mode (`LoadPeer`), which cost
//! the generator a fraction as much, so that larger scenarios measure the node and not the
//! generator sharing its cores.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedside_crds::join::Role;
use bedside_tests::load_peer::LoadPeer;
use bedside_tests::media::{PeerOptions, Received, RustPeer, TestNode, VideoLoad};

/// Which stack the load's peers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    Webrtc,
    Str0m,
}

impl Generator {
    pub fn name(self) -> &'static str {
        match self {
            Generator::Webrtc => "webrtc",
            Generator::Str0m => "str0m",
        }
    }

    pub fn parse(name: &str) -> Option<Generator> {
        match name.trim() {
            "webrtc" => Some(Generator::Webrtc),
            "str0m" => Some(Generator::Str0m),
            _ => None,
        }
    }

    /// A participant of `room`: a publisher of `video`, or a receive-only subscriber.
    pub async fn join(
        self,
        node: &TestNode,
        room: &str,
        user: &str,
        video: Option<VideoLoad>,
    ) -> BenchPeer {
        let token = node.token(room, user, Role::Host);
        match self {
            Generator::Webrtc => {
                let options = video.map_or_else(PeerOptions::receive_only, PeerOptions::video);
                let mut peer = RustPeer::join(node, room, &token, options).await;
                if video.is_some() {
                    peer.start_video();
                }
                BenchPeer::Webrtc(peer)
            }
            Generator::Str0m => BenchPeer::Str0m(LoadPeer::join(node, room, &token, video).await),
        }
    }

    /// `publishers` peers, each the host of a room of its own (`bench-{i}`) sending `load`,
    /// given a second to settle before subscribers join.
    pub async fn publishers(
        self,
        node: &TestNode,
        publishers: usize,
        load: VideoLoad,
    ) -> Vec<BenchPeer> {
        let mut pubs = Vec::new();
        for i in 0..publishers {
            let room = format!("bench-{i}");
            pubs.push(
                self.join(node, &room, &format!("pub-{i}"), Some(load))
                    .await,
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        pubs
    }
}

/// A peer of the load on either stack.
#[derive(Debug)]
pub enum BenchPeer {
    Webrtc(RustPeer),
    Str0m(LoadPeer),
}

impl BenchPeer {
    pub fn participant_id(&self) -> &str {
        match self {
            BenchPeer::Webrtc(p) => &p.participant_id,
            BenchPeer::Str0m(p) => &p.participant_id,
        }
    }

    pub fn received(&self) -> &Arc<Mutex<Received>> {
        match self {
            BenchPeer::Webrtc(p) => &p.received,
            BenchPeer::Str0m(p) => &p.received,
        }
    }

    /// Stamped video packets handed to the stack so far.
    pub fn video_sent(&self) -> &AtomicU64 {
        match self {
            BenchPeer::Webrtc(p) => &p.video_sent,
            BenchPeer::Str0m(p) => &p.video_sent,
        }
    }

    pub async fn leave(self) {
        match self {
            BenchPeer::Webrtc(p) => p.leave().await,
            BenchPeer::Str0m(p) => p.leave().await,
        }
    }
}

/// A scenario: publishers, subscribers per publisher, media loops (`None`: the default), and
/// the stack the load runs on.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub publishers: usize,
    pub per_room: usize,
    pub loops: Option<u16>,
    pub generator: Generator,
    /// The SFU held to CPU 0 and the generator to the others, so neither takes the other's
    /// core and the SFU's CPU is one core's worth at most.
    pub pinned: bool,
}

impl Scenario {
    /// `PxS`, `PxS@L`, either with `/webrtc` or `/str0m` (the load's stack; `default` without),
    /// and a final `+pin` to pin the node to one core.
    pub fn parse(spec: &str, default: Generator) -> Option<Scenario> {
        let (spec, pinned) = match spec.trim().strip_suffix("+pin") {
            Some(spec) => (spec, true),
            None => (spec.trim(), false),
        };
        let (spec, generator) = match spec.trim().split_once('/') {
            Some((spec, generator)) => (spec, Generator::parse(generator)?),
            None => (spec.trim(), default),
        };
        let (load, loops) = match spec.trim().split_once('@') {
            Some((load, loops)) => (load, Some(loops.trim().parse().ok()?)),
            None => (spec.trim(), None),
        };
        let (a, b) = load.split_once('x')?;
        Some(Scenario {
            publishers: a.trim().parse().ok()?,
            per_room: b.trim().parse().ok()?,
            loops,
            generator,
            pinned,
        })
    }

    /// The scenario's node (its loops as asked), held to a core of its own if asked; whether
    /// that held.
    pub async fn spawn_node(&self, binary: &std::path::Path) -> (TestNode, bool) {
        let node = TestNode::spawn_with_loops(binary, self.loops).await;
        let pinned = self.pinned && pin_apart(node.pid());
        (node, pinned)
    }
}

/// The SFU process `sfu` held to CPU 0 and this process (the load) to the others; false, and
/// nothing held, on a single CPU or when taskset failed.
pub fn pin_apart(sfu: u32) -> bool {
    let cpus = online_cpus();
    cpus > 1 && pin(sfu, "0") && pin(std::process::id(), &format!("1-{}", cpus - 1))
}

/// This process free to run on every CPU again (after [`pin_apart`]).
pub fn unpin_load() {
    pin(std::process::id(), &format!("0-{}", online_cpus() - 1));
}

/// The machine's CPUs, not this process's: `available_parallelism` counts only the CPUs the
/// process may run on, one after [`pin_apart`].
fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| list.trim().strip_prefix("0-")?.parse::<usize>().ok())
        .map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |last| last + 1,
        )
}

/// Holds every thread of `pid` to `cpus` (taskset's list syntax); false, said on stderr, if
/// that failed. A thread that ends while taskset walks the list fails it, so it tries again.
fn pin(pid: u32, cpus: &str) -> bool {
    let mut why = String::new();
    for _ in 0..3 {
        match std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .output()
        {
            Ok(out) if out.status.success() => return true,
            Ok(out) => why = String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => why = e.to_string(),
        }
    }
    eprintln!("could not hold process {pid} to CPUs {cpus}: {why}");
    false
}
