//! The media engine's entry points with what a hostile client controls: offers, answers and
//! candidates over signaling, datagrams to the media port from joined peers and from anyone,
//! in any order and at any pace. The engine must answer each (accept or refuse) and go on;
//! a panic here would take every visit on the node down with it.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bedside_crds::join::Role;
use bedside_media_node::crypto_policy::SrtpPolicy;
use bedside_media_node::meeting;
use bedside_media_node::protocol::ServerMessage;
use bedside_media_node::sfu::engine::Engine;
use bedside_media_node::sfu::{Command, EngineSettings, EngineStats, HostAction, ParticipantId};
use libfuzzer_sys::fuzz_target;
use tokio::sync::{mpsc, oneshot};

struct Room {
    engine: Engine,
    now: Instant,
    ids: Vec<ParticipantId>,
    /// Kept open: a closed channel reads as a participant gone.
    _messages: Vec<mpsc::Receiver<ServerMessage>>,
}

impl Room {
    fn new() -> Self {
        let stats =
            EngineStats::new(&prometheus::Registry::new(), "tenant", "node").expect("metrics");
        let settings = EngineSettings {
            tenant: "tenant".into(),
            advertised: "127.0.0.1:40000".parse().expect("address"),
            policy: SrtpPolicy::Aes256GcmOnly,
            max_participants: 4,
            meeting: meeting::Policy::new(Duration::from_secs(900), Duration::from_secs(7200)),
            end_to_end: false,
            // With a relay handed out: candidates also decide when media-connected is told.
            relay: true,
        };
        let now = Instant::now();
        let mut room = Self {
            engine: Engine::new(settings, Arc::new(stats), now),
            now,
            ids: Vec::new(),
            _messages: Vec::new(),
        };
        room.join(Role::Host, "practitioner.1");
        room.join(Role::Participant, "patient.1");
        if let Some(&patient) = room.ids.get(1) {
            let (reply, _answer) = oneshot::channel();
            let host = room.ids[0];
            room.engine.handle_command(
                Command::Host {
                    id: host,
                    action: HostAction::Admit(patient),
                    reply,
                },
                now,
            );
        }
        room
    }

    fn join(&mut self, role: Role, user: &str) {
        let (events, messages) = mpsc::channel(64);
        let (reply, mut answer) = oneshot::channel();
        let command = Command::Join {
            room: "room".into(),
            role,
            user: user.into(),
            token_expires: self.now + Duration::from_secs(3600),
            display_name: None,
            remembered: None,
            entry: bedside_media_node::meeting::Entry::Link,
            events,
            reply,
        };
        self.engine.handle_command(command, self.now);
        let joined = answer
            .try_recv()
            .expect("the engine replies before it returns");
        self.ids.push(joined.expect("a join into an empty room").id);
        self._messages.push(messages);
    }

    fn step(&mut self, op: u8, body: &[u8]) {
        let id = self.ids[usize::from(op >> 7)];
        let text = String::from_utf8_lossy(body).into_owned();
        let peer: SocketAddr = "127.0.0.2:5000".parse().expect("address");
        match op & 7 {
            0 => self.ask(|reply| Command::Offer {
                id,
                sdp: text,
                reply,
            }),
            1 => self.ask(|reply| Command::Answer {
                id,
                sdp: text,
                reply,
            }),
            2 => self.ask(|reply| Command::Candidate {
                id,
                candidate: text,
                reply,
            }),
            3 => self.engine.handle_datagram(body, peer, self.now),
            4 => {
                let port = u16::from(body.first().copied().unwrap_or(0)) + 1024;
                self.engine.handle_datagram(
                    body,
                    SocketAddr::from(([127, 0, 0, 9], port)),
                    self.now,
                );
            }
            5 => self.engine.handle_command(Command::Unmute { id }, self.now),
            _ => {
                let millis = body
                    .iter()
                    .take(2)
                    .fold(0u64, |m, b| m * 256 + u64::from(*b));
                self.now += Duration::from_millis(millis);
                self.engine.handle_timeout(self.now);
            }
        }
        while self.engine.poll_transmit().is_some() {}
    }

    fn ask<T>(&mut self, make: impl FnOnce(oneshot::Sender<T>) -> Command) {
        let (reply, mut answer) = oneshot::channel();
        self.engine.handle_command(make(reply), self.now);
        assert!(
            answer.try_recv().is_ok(),
            "every request is answered before the engine returns"
        );
    }
}

// Input: records of [op, length (2 bytes), body].
fuzz_target!(|data: &[u8]| {
    let mut room = Room::new();
    let mut rest = data;
    while let [op, high, low, tail @ ..] = rest {
        let len = (usize::from(*high) << 8 | usize::from(*low)).min(tail.len());
        let (body, next) = tail.split_at(len);
        room.step(*op, body);
        rest = next;
    }
    room.engine.shutdown("fuzz run over");
});
