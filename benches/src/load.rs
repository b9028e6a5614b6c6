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
